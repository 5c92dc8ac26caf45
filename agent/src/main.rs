//! `chorus`: the agent daemon and its command-line client.

use agent::cli::{self, Client};
use agent::config::{Config, Overrides, ProcessEnv};
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use rand::TryRng;
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc instead of the system allocator. Why (issue 15): a wiped node catching up applies
/// about a million entries, each a few short-lived allocations (a decoded key and value, the
/// packed slot, its log record, its event), and glibc's malloc was about 30 % of that node's
/// samples (perf). The same build with jemalloc preloaded caught up 1M keys in 3.15-3.30 s
/// against 3.76-4.78 s, interleaved on one data set (docs/benchmarks.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "Cluster membership, quorum and a replicated object store in one agent"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// A file holding the API token (its first line), for an agent with [[api.tokens]]; or set
    /// CHORUS_TOKEN to the token itself.
    #[arg(long, global = true, env = "CHORUS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A PEM file of the certificate authorities to trust when --api is an https:// URL (an agent
    /// with api.tls_cert).
    #[arg(long, global = true, env = "CHORUS_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent (a bare `chorus agent` is a single-node cluster on loopback).
    Agent(AgentArgs),
    /// List the members this agent knows.
    Members(ClientArgs),
    /// Show this agent's node, quorum and member counts; `--check` exits 4 without quorum.
    Status(StatusArgs),
    /// Make the agent leave the cluster gracefully and stop (as SIGTERM does), for hosts where
    /// systemctl is not the way.
    Leave(ClientArgs),
    /// Join a cluster through one of its agents' gossip address now (as a seed would); waits up
    /// to 10 s for the agent there to be listed.
    Join {
        #[command(flatten)]
        c: ClientArgs,
        /// HOST:PORT of another agent's gossip port.
        addr: String,
    },
    /// Report a failed member `left` on every node now, instead of after 24 hours as failed
    /// (a node that is gone for good).
    ForceLeave {
        #[command(flatten)]
        c: ClientArgs,
        /// The member's name (or id, from `chorus members`).
        name: String,
    },
    /// Print a new random cluster key (base64) for `cluster.key`.
    Keygen,
    /// The cluster keyring: rotate the key on a running cluster (install, use, remove).
    #[command(subcommand)]
    Keyring(agent::keyring_cli::KeyringCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of `chorus` and its commands.
    Man,
    /// Read and write the replicated key/value store.
    #[command(subcommand)]
    Kv(KvCmd),
    /// The strong keyspace: linearizable compare-and-set registers (`chorus strong --help`).
    #[command(subcommand)]
    Strong(agent::strong_cli::StrongCmd),
    /// Run a command only while holding a lock: `chorus lock NAME -- COMMAND...`
    Lock(agent::lock_cli::LockArgs),
    /// Who leads the cluster (exit 3 when nobody does); `--watch` follows changes.
    Leader(agent::lock_cli::LeaderArgs),
    /// Campaign in a named election and lead (running a command, if given) until stopped:
    /// `chorus elect NAME VALUE [-- COMMAND...]`; `--observe [--watch]` shows who leads.
    Elect(agent::lock_cli::ElectArgs),
    /// Sessions: one lease for several locks (`chorus session --help`).
    #[command(subcommand)]
    Session(agent::session_cli::SessionCmd),
    /// Follow the event stream (reconnects without missing anything); `--type` filters.
    Events(agent::events_cli::EventsArgs),
    /// Watch a key (print each new value) or, with --prefix, a store's changes under a prefix.
    Watch(agent::events_cli::WatchArgs),
    /// Follow the agent's own log through its API (as its log level and format let through).
    Monitor(agent::monitor::MonitorArgs),
    /// Load-test running agents' key/value API (bounded in time and operations).
    Bench(BenchArgs),
    /// Back up a node's store, or restore a backup onto an empty node.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Save the running agent's whole store (every store, tombstones included) to FILE.
    Save {
        /// Where to write the backup (written whole or not at all).
        file: PathBuf,
        /// The agent's API address.
        #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
        api: String,
    },
    /// Install the backup FILE as the store of a stopped node that holds no entries; the agent
    /// then starts with them and catches up with its peers.
    Restore {
        /// The backup, from `chorus snapshot save`.
        file: PathBuf,
        /// The node's TOML config file (for node.data_dir).
        #[arg(long, short, env = "CHORUS_CONFIG")]
        config: Option<PathBuf>,
        /// The node's data directory (node.data_dir), overriding the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// An agent's API address; repeat to spread clients over several agents.
    #[arg(long = "api", required = true)]
    apis: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// How long to run, e.g. 10s.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// put or get (the object store), cas (compare-and-sets on each client's own strong keys)
    /// or strong-get.
    #[arg(long, default_value = "put")]
    op: String,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// quorum or local.
    #[arg(long, default_value = "quorum", value_parser = parse_consistency)]
    consistency: store::Consistency,
    /// Store name.
    #[arg(long, default_value = "default")]
    store: String,
    /// Distinct keys per client.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Upper bound on operations per client.
    #[arg(long, default_value_t = 10_000_000)]
    max_ops: u64,
}

#[derive(Subcommand)]
enum KvCmd {
    /// Write VALUE (or standard input when VALUE is `-` or absent) under KEY.
    Put {
        #[command(flatten)]
        c: KvArgs,
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Value; `-` or nothing reads standard input.
        value: Option<String>,
        /// Time to live, e.g. 30s, 10m.
        #[arg(long, allow_hyphen_values = true)]
        ttl: Option<String>,
        /// Print nothing on success (by default the new version).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print the value of KEY (raw bytes on standard output; with --json, base64 in `value`).
    Get {
        #[command(flatten)]
        c: KvArgs,
        /// Store name.
        store: String,
        /// Key.
        key: String,
    },
    /// Delete KEY.
    Del {
        #[command(flatten)]
        c: KvArgs,
        /// Store name.
        store: String,
        /// Key.
        key: String,
    },
    /// List keys, one per line.
    Ls {
        #[command(flatten)]
        c: KvArgs,
        /// Store name.
        store: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many keys.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Args)]
struct KvArgs {
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    api: String,
    /// quorum (default for most stores) or local; the agent checks it (a bad one is a
    /// `bad_request`, exit 6, like every other bad value of a request).
    #[arg(long)]
    consistency: Option<String>,
    /// Print the API's JSON answer (with the version) instead of plain output.
    #[arg(long)]
    json: bool,
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
    /// Discard the store log from the first damaged record on (instead of refusing to start);
    /// the discarded entries come back from peers by anti-entropy.
    #[arg(long)]
    repair: bool,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    c: ClientArgs,
    /// For scripts and health checks: exit 4 (as `no_quorum` does) when this node has no
    /// quorum, 0 when it has.
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
    if let Err(e) = cli::set_token(
        cli.token_file.as_deref(),
        std::env::var("CHORUS_TOKEN").ok(),
    )
    .and_then(|()| cli::set_ca(cli.ca_file.as_deref()))
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match cli.cmd {
        Cmd::Keyring(k) => agent::keyring_cli::run(k),
        Cmd::Agent(a) => run_agent(a),
        Cmd::Members(c) => client(&c, "/v1/members", cli::members_table),
        Cmd::Status(s) => match fetch(&s.c, "/v1/status", cli::status_text) {
            Ok(v) if s.check && v["quorum"]["has_quorum"] != true => {
                eprintln!("no quorum: this node cannot write (chorus status --check)");
                ExitCode::from(4)
            }
            Ok(_) => ExitCode::SUCCESS,
            Err(code) => code,
        },
        Cmd::Leave(c) => match Client::new(&c.api).call("POST", "/v1/leave", Some(Vec::new())) {
            Ok(_) => {
                println!("leaving: peers will report this node left, not failed");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Cmd::Kv(k) => kv(k),
        Cmd::Strong(s) => agent::strong_cli::run(s),
        Cmd::Lock(l) => agent::lock_cli::run(l),
        Cmd::Leader(l) => agent::lock_cli::leader(l),
        Cmd::Elect(e) => agent::lock_cli::elect(e),
        Cmd::Session(s) => agent::session_cli::run(s),
        Cmd::Events(e) => agent::events_cli::run(e),
        Cmd::Watch(w) => agent::events_cli::watch(w),
        Cmd::Monitor(m) => agent::monitor::run(m),
        Cmd::Bench(b) => bench(b),
        Cmd::Snapshot(s) => snapshot(s),
        Cmd::Join { c, addr } => join(&c, &addr),
        Cmd::ForceLeave { c, name } => {
            let path = format!("/v1/force-leave?name={}", cli::encode_segment(&name));
            match Client::new(&c.api).call("POST", &path, Some(Vec::new())) {
                Ok(_) => {
                    println!("{name} is reported left on every node");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            // Into a buffer first: a closed pipe (`| head`) is not a panic.
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "chorus", &mut out);
            use std::io::Write;
            let _ = std::io::stdout().write_all(&out);
            ExitCode::SUCCESS
        }
        Cmd::Man => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut out) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            // The subcommands' pages follow the main one, as sections of one page.
            for sub in Cli::command().get_subcommands() {
                let name = format!("chorus-{}", sub.get_name());
                let name: &'static str = Box::leak(name.into_boxed_str()); // a one-shot command
                let page = clap_mangen::Man::new(sub.clone().name(name));
                if let Err(e) = page.render(&mut out) {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            use std::io::Write;
            let _ = std::io::stdout().write_all(&out);
            ExitCode::SUCCESS
        }
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

/// `chorus join ADDR`: asks the agent to announce itself there, then waits (10 s at most) for a
/// member at that address to be listed alive.
fn join(c: &ClientArgs, addr: &str) -> ExitCode {
    let client = Client::new(&c.api);
    let path = format!("/v1/join?addr={}", cli::encode_segment(addr));
    let announced = match client.call("POST", &path, Some(Vec::new())) {
        Ok(r) => serde_json::from_slice::<serde_json::Value>(&r.body).unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let targets: Vec<String> = announced["announced"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(v) = client.get_json("/v1/members") {
            let found = v["members"].as_array().into_iter().flatten().find(|m| {
                m["state"] == "alive"
                    && m["gossip_addr"]
                        .as_str()
                        .is_some_and(|g| targets.iter().any(|t| t == g))
            });
            if let Some(m) = found {
                println!(
                    "joined: {} ({}) is a member",
                    cli::s(&m["name"]),
                    cli::s(&m["gossip_addr"])
                );
                return ExitCode::SUCCESS;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!(
        "error: announced to {targets:?}, but no member there is listed after 10 s (another \
         cluster name or key there? its agent's log says)"
    );
    ExitCode::FAILURE
}

fn client(args: &ClientArgs, path: &str, human: fn(&serde_json::Value) -> String) -> ExitCode {
    match fetch(args, path, human) {
        Ok(_) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// GETs `path` and prints it (JSON with `--json`, else `human`); the answer, or the exit code.
fn fetch(
    args: &ClientArgs,
    path: &str,
    human: fn(&serde_json::Value) -> String,
) -> Result<serde_json::Value, ExitCode> {
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
            Ok(v)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(e.exit_code()))
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
        if !config.key_configured {
            eprintln!(
                "warning: no cluster.key: packets are sealed with a key derived from the cluster \
                 name, so anyone who knows the name can join; run `chorus keygen` once and put \
                 its output in cluster.key on every node"
            );
        }
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
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // The filter sits behind a reload handle: SIGHUP applies a changed `log.level`.
    let (filter, filter_handle) = tracing_subscriber::reload::Layer::new(
        tracing_subscriber::EnvFilter::new(&config.log_level),
    );
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(agent::monitor::Tee);
    if config.log_json {
        registry.with(fmt.json()).init();
    } else {
        registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init();
    }
    let log_reload: agent::LogReload = Box::new(move |level: &str| {
        let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        filter_handle.reload(f).map_err(|e| e.to_string())
    });
    // One thread, tasks run in the order they were woken. Why (issue 15): with the log written by
    // the driver itself under light load, a second worker mostly added wake-ups between the two
    // (each an inter-processor interrupt on a virtual machine): alternated on the 2-core host
    // with three agents, one worker gave one client a p50 of 0.47-0.49 ms against 0.50-0.54 ms
    // and 32 clients within 1 % ("One runtime worker, again" in docs/benchmarks.md). The
    // current-thread scheduler then replaced a one-worker multi-thread one: that one runs a task
    // woken by the running task next (its "LIFO slot"), so each request's command ran the driver
    // at once and left alone; first in, first out, the requests ready together reach the driver
    // together and their frames leave in one write per peer (sends at 32 clients 75,365 against
    // about 129,000 in 5 s; quorum writes 17,914/s against 15,413/s, "The current-thread
    // runtime"). Blocking work goes to its own threads (the log writer, `spawn_blocking` for
    // backups), but for the driver's own log writes under light load, which one slow write
    // turns off for a second (`Writer::write_inline`).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(agent::run(
        config, a.config, overrides, a.repair, log_reload,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn snapshot(cmd: SnapshotCmd) -> ExitCode {
    match cmd {
        SnapshotCmd::Save { file, api } => {
            // A big store takes a while to encode and send: minutes and gigabytes, not 10 s.
            let client = Client::with_limits(&api, std::time::Duration::from_secs(600), 64 << 30);
            let raw = match client.call("GET", "/v1/snapshot", None) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if raw.stale {
                eprintln!(
                    "warning: the node was catching up after a start; the backup may lack recent \
                     writes (take it from a node whose `chorus status` says store: current)"
                );
            }
            match agent::backup::save(&file, &raw.body) {
                Ok(n) => {
                    println!(
                        "saved {n} entries ({} bytes) to {}",
                        raw.body.len(),
                        file.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        SnapshotCmd::Restore {
            file,
            config,
            data_dir,
        } => {
            let overrides = Overrides {
                data_dir,
                ..Overrides::default()
            };
            let cfg = match Config::load(config.as_deref(), &ProcessEnv, &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let _lock = match agent::node_file::lock_data_dir(&cfg.data_dir) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e} (stop the agent before restoring)");
                    return ExitCode::FAILURE;
                }
            };
            let was_member = agent::node_file::has_identity(&cfg.data_dir);
            match agent::backup::restore(&file, &cfg.data_dir.join("store"), was_member) {
                Ok(r) => {
                    println!(
                        "restored {} entries into {}; start the agent: it serves them and \
                         catches up with its peers",
                        r.entries,
                        r.path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn kv(cmd: KvCmd) -> ExitCode {
    use std::io::{Read, Write};
    let query = |c: &KvArgs, extra: Vec<(String, String)>| {
        let mut q: Vec<String> = extra
            .into_iter()
            .map(|(k, v)| format!("{k}={}", cli::encode_segment(&v)))
            .collect();
        if let Some(cons) = &c.consistency {
            q.push(format!("consistency={}", cli::encode_segment(cons)));
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    };
    let path = |store: &str, key: &str| {
        format!(
            "/v1/kv/{}/{}",
            cli::encode_segment(store),
            cli::encode_segment(key)
        )
    };
    let result = match &cmd {
        KvCmd::Put { c, store, key, value, ttl, quiet } => {
            let body = match value.as_deref() {
                Some(v) if v != "-" => Ok(v.as_bytes().to_vec()),
                _ => {
                    let mut b = Vec::new();
                    std::io::stdin().read_to_end(&mut b).map(|_| b).map_err(|e| cli::CliError::Stdin(e.to_string()))
                }
            };
            let extra = ttl.iter().map(|t| ("ttl".to_string(), t.clone())).collect();
            let client = Client::new(&c.api);
            body.and_then(|b| cli::check_value_size(&client, b.len()).map(|()| b))
                .and_then(|b| client.call("PUT", &format!("{}{}", path(store, key), query(c, extra)), Some(b)))
                .map(|r| {
                    if c.json {
                        println!("{}", String::from_utf8_lossy(&r.body));
                    } else if !quiet {
                        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                        println!("{}", v["version"].as_str().unwrap_or_default());
                    }
                })
        }
        KvCmd::Del { c, store, key } => Client::new(&c.api)
            .call("DELETE", &format!("{}{}", path(store, key), query(c, vec![])), None)
            .map(|r| {
                if c.json {
                    println!("{}", String::from_utf8_lossy(&r.body));
                }
            }),
        KvCmd::Get { c, store, key } => Client::new(&c.api)
            .call("GET", &format!("{}{}", path(store, key), query(c, vec![])), None)
            .map(|r| {
                if r.stale {
                    eprintln!("warning: stale read (this node has no quorum, or is catching up after a start)");
                }
                if c.json {
                    use base64::Engine;
                    let v = serde_json::json!({
                        "value": base64::engine::general_purpose::STANDARD.encode(&r.body),
                        "version": r.version,
                        "stale": r.stale
                    });
                    println!("{v}");
                } else {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&r.body);
                    // On a terminal, end the line (a value without a newline would run into the
                    // prompt); into a pipe or a file, the bytes exactly as stored.
                    if std::io::IsTerminal::is_terminal(&out) && !r.body.ends_with(b"\n") {
                        let _ = out.write_all(b"\n");
                    }
                }
            }),
        KvCmd::Ls { c, store, prefix, limit } => {
            let extra = vec![("prefix".to_string(), prefix.clone()), ("limit".to_string(), limit.to_string())];
            Client::new(&c.api)
                .call("GET", &format!("/v1/kv/{}{}", cli::encode_segment(store), query(c, extra)), None)
                .map(|r| {
                    if c.json {
                        println!("{}", String::from_utf8_lossy(&r.body));
                    } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) {
                        for k in v["keys"].as_array().into_iter().flatten() {
                            println!("{}", k.as_str().unwrap_or_default());
                        }
                    }
                })
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

fn bench(b: BenchArgs) -> ExitCode {
    let duration = match humantime::parse_duration(&b.duration) {
        Ok(d) if d <= std::time::Duration::from_secs(3600) => d,
        _ => {
            eprintln!(
                "error: --duration {:?}: write e.g. 10s (at most 1h)",
                b.duration
            );
            return ExitCode::from(2);
        }
    };
    if !matches!(b.op.as_str(), "put" | "get" | "cas" | "strong-get") || b.clients == 0 {
        eprintln!("error: --op is put, get, cas or strong-get, --clients at least 1");
        return ExitCode::from(2);
    }
    let spec = agent::loadgen::LoadSpec {
        apis: b.apis,
        clients: b.clients,
        duration,
        max_ops_per_client: b.max_ops,
        op: b.op.clone(),
        value_bytes: b.value_bytes,
        consistency: b.consistency,
        store: b.store,
        keys: b.keys,
    };
    let total = duration.as_secs_f64();
    let r = agent::loadgen::run(&spec, &|ok, t| {
        let frac = (t.as_secs_f64() / total).min(1.0);
        let bar = "#".repeat((frac * 30.0) as usize);
        eprint!("\r[{bar:<30}] {:>5.1}s {ok} ok", t.as_secs_f64());
    });
    eprintln!();
    println!(
        "{} {} x{} clients, {} B values: {:.0} ops/s ({} ok, {} in {:.1} s); latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        b.op,
        b.consistency.name(),
        b.clients,
        b.value_bytes,
        r.rate(),
        r.ok,
        r.errors_text(),
        r.elapsed.as_secs_f64(),
        r.p50.as_secs_f64() * 1e3,
        r.p90.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.max.as_secs_f64() * 1e3,
    );
    if r.ok == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A consistency level on the command line, checked before anything is sent.
fn parse_consistency(s: &str) -> Result<store::Consistency, String> {
    s.parse()
}
