//! `chorus keyring list|install|use|remove`: rotate the cluster key on a running cluster.
//!
//! The rotation (docs/security.md): `chorus keygen` a new key, `install` it, `use` it, `remove`
//! the old one, each step only after the previous one's report is complete. Every operation runs
//! on every live member and prints what each did; the exit status is 0 when all did it, 9 when
//! some did not (repeat the step once they are back), and the API's code otherwise.

use crate::cli::{CliError, Client};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KeyringCmd {
    /// This node's keys (ids), the primary first, with packets opened under each.
    List(KeyringArgs),
    /// Every node accepts KEY too (it still seals with its primary).
    Install {
        #[command(flatten)]
        c: KeyringArgs,
        /// The new key, as `chorus keygen` prints it.
        key: String,
    },
    /// Every node seals with KEY (installed before) from now on.
    Use {
        #[command(flatten)]
        c: KeyringArgs,
        /// The key, or its id.
        key: String,
    },
    /// No node accepts KEY any more (refused for the primary).
    Remove {
        #[command(flatten)]
        c: KeyringArgs,
        /// The key, or its id.
        key: String,
    },
}

#[derive(Args)]
pub struct KeyringArgs {
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    pub api: String,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// Exit status when some node did not do the operation.
pub const INCOMPLETE: u8 = 9;

/// Runs `chorus keyring ...`.
pub fn run(cmd: KeyringCmd) -> ExitCode {
    let (c, path, body) = match &cmd {
        KeyringCmd::List(c) => (c, "/v1/keyring", None),
        KeyringCmd::Install { c, key } => (c, "/v1/keyring/install", Some(key)),
        KeyringCmd::Use { c, key } => (c, "/v1/keyring/use", Some(key)),
        KeyringCmd::Remove { c, key } => (c, "/v1/keyring/remove", Some(key)),
    };
    let client = Client::new(&c.api);
    let answer = match body {
        None => client.get_json(path),
        Some(k) => client
            .call_with(
                "POST",
                path,
                Some(json!({ "key": k }).to_string().into_bytes()),
                &[("content-type", "application/json".to_string())],
            )
            .and_then(|r| {
                serde_json::from_slice::<Value>(&r.body)
                    .map_err(|e| CliError::Protocol(e.to_string()))
            }),
    };
    let v = match answer {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if c.json {
        println!("{v}");
    } else if body.is_none() {
        for k in v["keys"].as_array().into_iter().flatten() {
            let primary = if k["primary"] == true {
                "  (primary)"
            } else {
                ""
            };
            println!(
                "{}  opened {}{primary}",
                k["id"].as_str().unwrap_or("?"),
                k["opened"]
            );
        }
    } else {
        print!("{}", report_text(&v));
    }
    if body.is_some() && v["complete"] != true {
        return ExitCode::from(INCOMPLETE);
    }
    ExitCode::SUCCESS
}

/// A keyring report as lines: the operation, then each node and what it did.
pub fn report_text(v: &Value) -> String {
    let mut out = format!(
        "{} {}: {}\n",
        v["op"].as_str().unwrap_or("?"),
        v["key"].as_str().unwrap_or("?"),
        if v["complete"] == true {
            "done on every node"
        } else {
            "NOT done on every node: repeat once the nodes below are back"
        }
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let what = match n["outcome"].as_str() {
            Some("refused") => format!("refused: {}", n["error"].as_str().unwrap_or("")),
            Some(o) => o.replace('_', " "),
            None => "?".into(),
        };
        out.push_str(&format!(
            "  {:<20} {}  {what}\n",
            n["name"].as_str().unwrap_or("?"),
            n["id"].as_str().unwrap_or("?")
        ));
    }
    out
}
