//! `chorus session create|renew|show|destroy`: sessions from the command line (an application
//! that holds several locks renews them all with one `renew`; docs/coordination.md, "Sessions").

use crate::cli::{self, CliError, Client};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum SessionCmd {
    /// Create a session; prints its id (take locks with `PUT /v1/lock/NAME?session=ID`).
    Create {
        #[command(flatten)]
        c: SessionArgs,
        /// The session's lease (and each of its locks').
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How long after an expiry nobody may take its locks.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        lock_delay: Duration,
    },
    /// Renew a session and every lock it holds; prints how long they may act and the locks lost.
    Renew {
        #[command(flatten)]
        c: SessionArgs,
        /// The session id.
        id: String,
    },
    /// Show a session: whether its lease runs, and its locks with their fencing tokens.
    Show {
        #[command(flatten)]
        c: SessionArgs,
        /// The session id.
        id: String,
    },
    /// Release every lock of a session, then the session.
    Destroy {
        #[command(flatten)]
        c: SessionArgs,
        /// The session id.
        id: String,
    },
}

#[derive(Args)]
pub struct SessionArgs {
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    pub api: String,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// Runs `chorus session ...`.
pub fn run(cmd: SessionCmd) -> ExitCode {
    let (c, method, path, plain): (&SessionArgs, &str, String, fn(&serde_json::Value) -> String) =
        match &cmd {
            SessionCmd::Create { c, ttl, lock_delay } => (
                c,
                "PUT",
                format!(
                    "/v1/session?ttl={}ms&lock_delay={}ms",
                    ttl.as_millis(),
                    lock_delay.as_millis()
                ),
                |v| cli::s(&v["session"]),
            ),
            SessionCmd::Renew { c, id } => (
                c,
                "POST",
                format!("/v1/session/{}/renew", cli::encode_segment(id)),
                |v| {
                    format!(
                        "may act for {} ms; locks {}; lost {}",
                        v["act_for_ms"], v["locks"], v["lost"]
                    )
                },
            ),
            SessionCmd::Show { c, id } => (
                c,
                "GET",
                format!("/v1/session/{}", cli::encode_segment(id)),
                |v| serde_json::to_string_pretty(v).expect("JSON value serialises"),
            ),
            SessionCmd::Destroy { c, id } => (
                c,
                "DELETE",
                format!("/v1/session/{}", cli::encode_segment(id)),
                |v| format!("destroyed; released {}", v["released"]),
            ),
        };
    let body = (method != "GET" && method != "DELETE").then(Vec::new);
    let answer = Client::new(&c.api).call(method, &path, body).and_then(|r| {
        serde_json::from_slice::<serde_json::Value>(&r.body)
            .map_err(|e| CliError::Protocol(e.to_string()))
    });
    match answer {
        Ok(v) if c.json => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            println!("{}", plain(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
