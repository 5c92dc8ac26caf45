//! `chorus strong get|put|del`: the strong keyspace from the command line.

use crate::cli;
use base64::Engine;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum StrongCmd {
    /// Read a strong key (two quorum rounds): prints the value; exit 3 when it holds none.
    Get {
        #[command(flatten)]
        c: StrongArgs,
        /// The key.
        key: String,
    },
    /// Set a strong key (VALUE, or standard input when it is `-` or absent); prints the new
    /// version. With --if-version or --if-absent it is a compare-and-set: exit 7 (`conflict`)
    /// with the current version when the condition does not hold.
    Put {
        #[command(flatten)]
        c: StrongArgs,
        /// The key.
        key: String,
        /// The value.
        value: Option<String>,
        /// Only if the key is at this version.
        #[arg(long, conflicts_with = "if_absent")]
        if_version: Option<u64>,
        /// Only if the key holds no value (create).
        #[arg(long)]
        if_absent: bool,
        /// Fenced by a lock: LOCK:TOKEN, refused (exit 7, `stale_token`) when a write of this
        /// key already carried a higher token of that lock.
        #[arg(long)]
        fence: Option<String>,
    },
    /// Delete a strong key's value; prints the new version.
    Del {
        #[command(flatten)]
        c: StrongArgs,
        /// The key.
        key: String,
        /// Only if the key is at this version.
        #[arg(long)]
        if_version: Option<u64>,
        /// Fenced by a lock: LOCK:TOKEN (see `put`).
        #[arg(long)]
        fence: Option<String>,
    },
}

#[derive(Args)]
pub struct StrongArgs {
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    pub api: String,
    /// Print the API's JSON answer instead of plain output (a value is base64 in JSON).
    #[arg(long)]
    pub json: bool,
}

/// Runs a `chorus strong` command; the exit code is the documented one.
pub fn run(cmd: StrongCmd) -> ExitCode {
    use std::io::{Read, Write};
    let path = |key: &str, fence: &Option<String>| match fence {
        Some(f) => format!(
            "/v1/strong/{}?fence={}",
            cli::encode_segment(key),
            cli::encode_segment(f)
        ),
        None => format!("/v1/strong/{}", cli::encode_segment(key)),
    };
    let print_version = |c: &StrongArgs, r: cli::Raw| {
        if c.json {
            println!("{}", String::from_utf8_lossy(&r.body));
        } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) {
            println!("{}", v["version"]);
        }
    };
    let result = match &cmd {
        StrongCmd::Get { c, key } => cli::Client::new(&c.api)
            .call("GET", &path(key, &None), None)
            .map(|r| {
                if c.json {
                    let value = base64::engine::general_purpose::STANDARD.encode(&r.body);
                    let version: serde_json::Value = r
                        .version
                        .as_deref()
                        .and_then(|v| v.parse::<u64>().ok())
                        .map_or(serde_json::Value::Null, Into::into);
                    println!(
                        "{}",
                        serde_json::json!({ "value": value, "version": version })
                    );
                } else {
                    let _ = std::io::stdout().write_all(&r.body);
                }
            }),
        StrongCmd::Put {
            c,
            key,
            value,
            if_version,
            if_absent,
            fence,
        } => {
            let body = match value.as_deref() {
                Some(v) if v != "-" => Ok(v.as_bytes().to_vec()),
                _ => {
                    let mut b = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut b)
                        .map(|_| b)
                        .map_err(|e| cli::CliError::Stdin(e.to_string()))
                }
            };
            let mut headers = Vec::new();
            if let Some(v) = if_version {
                headers.push(("if-match", v.to_string()));
            }
            if *if_absent {
                headers.push(("if-none-match", "*".to_string()));
            }
            body.and_then(|b| {
                cli::Client::new(&c.api).call_with("PUT", &path(key, fence), Some(b), &headers)
            })
            .map(|r| print_version(c, r))
        }
        StrongCmd::Del {
            c,
            key,
            if_version,
            fence,
        } => {
            let headers: Vec<(&str, String)> = if_version
                .iter()
                .map(|v| ("if-match", v.to_string()))
                .collect();
            cli::Client::new(&c.api)
                .call_with("DELETE", &path(key, fence), None, &headers)
                .map(|r| print_version(c, r))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
