//! `chorus`: the agent daemon and its command-line client.

use agent::cli::{self, Client};
use agent::config::{Config, Overrides, ProcessEnv};
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use rand::TryRng;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "Cluster membership, quorum and a replicated object store in one agent"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent (a bare `chorus agent` is a single-node cluster on loopback).
    Agent(AgentArgs),
    /// List the members this agent knows.
    Members(ClientArgs),
    /// Show this agent's node, quorum and member counts.
    Status(ClientArgs),
    /// Print a new random cluster key (base64) for `cluster.key`.
    Keygen,
}

#[derive(Args)]
struct AgentArgs {
    /// TOML config file.
    #[arg(long, short, env = "CHORUS_CONFIG")]
    config: Option<PathBuf>,
    /// Node name (node.name).
    #[arg(long)]
    name: Option<String>,
    /// Data directory (node.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Gossip bind address (gossip.bind).
    #[arg(long)]
    bind: Option<String>,
    /// Gossip address advertised to peers (gossip.advertise).
    #[arg(long)]
    advertise: Option<String>,
    /// HTTP API bind address (api.bind).
    #[arg(long)]
    api: Option<String>,
    /// A seed `host:port` (discovery.seeds); repeat for several.
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// Expected cluster size (cluster.expected_nodes).
    #[arg(long)]
    expected_nodes: Option<u32>,
    /// Cluster name (cluster.name).
    #[arg(long)]
    cluster: Option<String>,
    /// Timing profile: lan, wan or local (gossip.profile).
    #[arg(long)]
    profile: Option<String>,
    /// Turn multicast discovery on (discovery.multicast).
    #[arg(long, conflicts_with = "no_multicast")]
    multicast: bool,
    /// Turn multicast discovery off.
    #[arg(long)]
    no_multicast: bool,
    /// Validate the configuration and exit (0 when valid, 2 with the faulty key otherwise).
    #[arg(long)]
    check: bool,
}

#[derive(Args)]
struct ClientArgs {
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    api: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Agent(a) => run_agent(a),
        Cmd::Members(c) => client(&c, "/v1/members", cli::members_table),
        Cmd::Status(c) => client(&c, "/v1/status", cli::status_text),
        Cmd::Keygen => {
            let mut k = [0u8; 32];
            if let Err(e) = rand::rngs::SysRng.try_fill_bytes(&mut k) {
                eprintln!("error: cannot read OS randomness: {e}");
                return ExitCode::FAILURE;
            }
            println!("{}", base64::engine::general_purpose::STANDARD.encode(k));
            ExitCode::SUCCESS
        }
    }
}

fn client(args: &ClientArgs, path: &str, human: fn(&serde_json::Value) -> String) -> ExitCode {
    match Client::new(&args.api).get_json(path) {
        Ok(v) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).expect("JSON value serialises")
                );
            } else {
                print!("{}", human(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_agent(a: AgentArgs) -> ExitCode {
    let overrides = Overrides {
        name: a.name,
        data_dir: a.data_dir,
        bind: a.bind,
        advertise: a.advertise,
        api: a.api,
        seeds: a.seeds,
        expected_nodes: a.expected_nodes,
        cluster: a.cluster,
        profile: a.profile,
        multicast: if a.multicast {
            Some(true)
        } else if a.no_multicast {
            Some(false)
        } else {
            None
        },
    };
    let config = match Config::load(a.config.as_deref(), &ProcessEnv, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if a.check {
        println!(
            "configuration valid: node {} in cluster {} ({} expected nodes, quorum {} of {} votes)",
            config.name,
            config.cluster,
            config.expected_nodes,
            config.quorum.required(),
            config.quorum.total()
        );
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(agent::run(config, a.config, overrides)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
