//! The Chorus agent: configuration, the tokio driver of the membership core, the HTTP API, metrics
//! and systemd integration. `run` is the whole daemon, top to bottom.

pub mod api;
pub mod api_metrics;
pub mod atomic_file;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod driver;
pub mod election_api;
pub mod events;
pub mod events_api;
pub mod events_cli;
pub mod handlers;
pub mod keyring_api;
pub mod keyring_cli;
pub mod keyring_file;
pub mod loadgen;
pub mod lock_api;
pub mod lock_cli;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod node_file;
pub mod session_api;
pub mod session_cli;
pub mod strong_api;
pub mod strong_cli;
pub mod transport;
pub mod wal_file;
pub mod watch_api;

use crate::config::{Config, Overrides, ProcessEnv};
use crate::driver::{Clock, Driver, Handle, StoreIo};
use crate::node_file::NodeFile;
use crate::transport::{Outbound, TransportStats};
use anyhow::Context;
use node::{Node, NodeConfig};
use rand::TryRng;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How long a graceful leave may take before the agent exits anyway.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the agent until SIGTERM or SIGINT, then leaves the cluster gracefully.
/// Sets the log filter of a running agent (tracing-subscriber syntax); an error says what is wrong
/// with the filter.
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    overrides: Overrides,
    repair: bool,
    log_reload: LogReload,
) -> anyhow::Result<()> {
    let running = config.clone();
    if !config.key_configured {
        warn!(
            "no cluster.key configured: packets are sealed with a key derived from the cluster name, \
             so anyone who knows the name can join; generate one with `chorus keygen`"
        );
    }
    if config.quorum.allows_split_brain() {
        warn!(
            required = config.quorum.required(),
            total = config.quorum.total(),
            "cluster.quorum is not a majority: both sides of a split could hold it"
        );
    }

    if !config.api_bind.ip().is_loopback() {
        if config.api_tokens.is_empty() {
            warn!(api = %config.api_bind,
                "api.bind is reachable beyond loopback and no [[api.tokens]] are configured: anyone who \
                 can reach it can write any key and download the whole store (docs/security.md)");
        } else if config.api_tls.is_none() {
            warn!(api = %config.api_bind,
                "api.bind is reachable beyond loopback without TLS: tokens and values cross the network \
                 in clear; set api.tls_cert and api.tls_key (docs/security.md)");
        }
    }

    // One crypto provider for every TLS use in the process (the API server; the CLI's client
    // brings its own).
    let _ = rustls::crypto::ring::default_provider().install_default();

    let signals = install_signals()?;
    let node_file = NodeFile::open_and_advance(&config.data_dir)
        .with_context(|| format!("opening node.data_dir {}", config.data_dir.display()))?;

    let gossip = net::bind_gossip(config.gossip_bind)?;
    let bound = gossip
        .local_addr()
        .context("reading the gossip socket address")?;
    let advertise = net::advertise_addr(bound, config.gossip_advertise, config.multicast.as_ref())?;

    let beacon = match &config.multicast {
        None => None,
        Some(m) => match net::open_beacon(m) {
            Ok(sock) => {
                info!(group = %m.group, "multicast discovery on");
                Some((sock, m.group))
            }
            Err(e) => {
                warn!(error = %e, "multicast discovery unavailable; seeds still work");
                None
            }
        },
    };

    let listener = tokio::net::TcpListener::bind(config.api_bind)
        .await
        .with_context(|| format!("binding api.bind {}", config.api_bind))?;
    let api_local = listener.local_addr()?;
    let api_advertised = if api_local.ip().is_unspecified() {
        SocketAddr::new(advertise.ip(), api_local.port())
    } else {
        api_local
    };

    let me = driver::identity(&node_file, advertise);
    let mut mcfg = config.membership_config(api_advertised, beacon.is_some());
    // A keyring changed through the API was persisted; it wins over the configured keys.
    if let Some(ring) = keyring_file::load(&config.data_dir)? {
        let configured = std::iter::once(&config.key).chain(&config.other_keys);
        for k in configured.filter(|k| !ring.contains(k)) {
            warn!(key = %k.id(), file = %keyring_file::path(&config.data_dir).display(),
                "a configured cluster key is not in the persisted keyring, which is what this node uses \
                 (a rotation retired it, or it was never installed): update the configuration, or \
                 install it with `chorus keyring install`");
        }
        info!(primary = %ring[0].id(), keys = ring.len(), "keyring read from the data directory");
        mcfg.key = ring[0].clone();
        mcfg.other_keys = ring[1..].to_vec();
    }
    let mut seed_bytes = [0u8; 8];
    rand::rngs::SysRng
        .try_fill_bytes(&mut seed_bytes)
        .context("reading OS randomness")?;
    let clock = Clock::new();
    info!(
        id = %me.id, generation = me.generation, gossip = %advertise, api = %api_local,
        cluster = %config.cluster, profile = config.profile.name(), "chorus agent starting"
    );

    // Store traffic: TCP on the gossip port (a separate port space from UDP).
    let store_listener = tokio::net::TcpListener::bind(bound)
        .await
        .with_context(|| format!("binding the store transport on TCP {bound}"))?;
    let tstats = Arc::new(TransportStats::default());
    let (frames_tx, frames_rx) = tokio::sync::mpsc::channel(4096);
    let scfg = config.store_config();
    // The store log: read it back before serving anything; damage stops the start here.
    let log_dir = config.data_dir.join("store");
    let recovered = wal_file::recover(&log_dir, repair)
        .with_context(|| format!("reading the store log in {}", log_dir.display()))?;
    let fsync = scfg
        .stores
        .iter()
        .map(|(n, s)| (n.clone(), s.fsync))
        .collect();
    let disk = node::Recovered {
        records: recovered.records,
        log_existed: recovered.existed,
        identity_created: node_file.created(),
        marked_lost: recovered.marked_lost,
        repaired: recovered.repaired,
    };
    let mut ncfg = NodeConfig::new(mcfg, Some(scfg), config.snapshot_min_records);
    ncfg.leader = config.leader.clone();
    let node = Node::recover(
        ncfg,
        me,
        u64::from_le_bytes(seed_bytes),
        clock.now(),
        clock.now().as_millis() as u64,
        disk,
    );
    // One sealer, one keyring: the membership core's, shared with the stream transport.
    let sealer = node.membership().sealer();
    tokio::spawn(transport::serve(
        store_listener,
        sealer.clone(),
        frames_tx,
        tstats.clone(),
    ));
    let (log_tx, log_reports) = tokio::sync::mpsc::unbounded_channel();
    let io = StoreIo {
        log: wal_file::Writer::start(log_dir.clone(), fsync, log_tx),
        log_dir,
        log_reports,
        outbound: Outbound::new(me.id, sealer, tstats.clone(), config.connect_timeout()),
        frames: frames_rx,
        stats: tstats,
        data_dir: config.data_dir.clone(),
    };

    let (mut driver, handle) = Driver::new(
        node,
        clock,
        gossip,
        beacon,
        config.seeds.clone(),
        node_file,
        io,
    );
    let reload_handlers = handlers::spawn(
        config.handlers.clone(),
        handlers::Local {
            name: config.name.clone(),
            datacenter: config.datacenter.clone(),
        },
        handle.subscribe(),
    );
    driver.start().await?;
    let driver_task = tokio::spawn(driver.run());

    let (stop_api_tx, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let tokens = Arc::new(auth::Tokens::new(config.api_tokens.clone()));
    let app = api::router(handle.clone(), config.max_value_bytes, tokens.clone());
    let tls = match &config.api_tls {
        None => None,
        Some((cert, key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "reading api.tls_cert {} and api.tls_key {} (PEM: the certificate chain, \
                         then the private key)",
                        cert.display(),
                        key.display()
                    )
                })?,
        ),
    };
    let server = match tls.clone() {
        None => tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_api_rx.await;
                })
                .await
        }),
        Some(tls) => {
            let listener = listener
                .into_std()
                .context("handing the API listener to the TLS server")?;
            let stop = axum_server::Handle::new();
            let stopper = stop.clone();
            tokio::spawn(async move {
                let _ = stop_api_rx.await;
                stopper.graceful_shutdown(Some(Duration::from_secs(2)));
            });
            tokio::spawn(async move {
                axum_server::from_tcp_rustls(listener, tls)
                    .handle(stop)
                    .serve(app.into_make_service())
                    .await
            })
        }
    };

    // Ready: the API answers and the core runs.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    info!(api = %api_local, tls = config.api_tls.is_some(), "ready");

    let reload = Reload {
        tls,
        tokens,
        handlers: reload_handlers,
        log: log_reload,
        config_path,
        overrides,
    };
    wait_for_stop(signals, &handle, &reload, running).await;

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = handle.leave().await;
    match tokio::time::timeout(LEAVE_TIMEOUT, driver_task).await {
        Ok(_) => info!("left the cluster"),
        Err(_) => warn!("graceful leave did not finish in time; exiting anyway"),
    }
    let _ = stop_api_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}

/// The signals the agent handles; installed before anything is served, so that a SIGHUP or
/// SIGTERM arriving during start-up is handled rather than killing the process.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

fn install_signals() -> anyhow::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok(Signals {
        term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
    })
}

/// What a SIGHUP needs to reload the configuration.
struct Reload {
    /// The API's TLS configuration, re-read from its files on SIGHUP (a renewed certificate).
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    tokens: Arc<auth::Tokens>,
    handlers: handlers::Reload,
    log: LogReload,
    config_path: Option<PathBuf>,
    overrides: Overrides,
}

/// Waits for SIGTERM or SIGINT; SIGHUP reloads the configuration, applies what can change at run
/// time (the seeds, the event handlers, `log.level`) and names every other changed key, loudly,
/// as needing a restart.
async fn wait_for_stop(signals: Signals, handle: &Handle, reload: &Reload, mut running: Config) {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    loop {
        tokio::select! {
            _ = handle.stopped() => { info!("left the cluster (asked through the API)"); return; }
            _ = term.recv() => { info!("SIGTERM: leaving"); return; }
            _ = int.recv() => { info!("SIGINT: leaving"); return; }
            _ = hup.recv() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                match Config::load(reload.config_path.as_deref(), &ProcessEnv, &reload.overrides) {
                    Ok(c) => {
                        let changed = running.changed_keys(&c);
                        let (applied, restart): (Vec<&str>, Vec<&str>) = changed
                            .iter()
                            .partition(|k| config::RELOADABLE.contains(k));
                        let _ = handle.set_seeds(c.seeds.clone()).await;
                        // Token files are read again on every reload: a rotated token takes
                        // effect without a restart.
                        reload.tokens.set(c.api_tokens.clone());
                        if let (Some(tls), Some((cert, key))) = (&reload.tls, &c.api_tls) {
                            match tls.reload_from_pem_file(cert, key).await {
                                Ok(()) => info!(cert = %cert.display(), "SIGHUP: API certificate reloaded"),
                                Err(e) => warn!(cert = %cert.display(), key = %key.display(), error = %e,
                                    "SIGHUP: API certificate NOT reloaded; the previous one stays in use"),
                            }
                        }
                        let _ = reload.handlers.send(std::sync::Arc::new(c.handlers.clone()));
                        let mut log_error = None;
                        if changed.contains(&"log.level") && let Err(e) = (reload.log)(&c.log_level) {
                            log_error = Some(e);
                        }
                        if let Some(e) = &log_error {
                            warn!(level = %c.log_level, error = %e, "SIGHUP: log.level not applied");
                        }
                        if restart.is_empty() {
                            info!(applied = ?applied, "SIGHUP: configuration reloaded");
                        } else {
                            warn!(applied = ?applied, need_restart = ?restart,
                                "SIGHUP: configuration reloaded; these changes take effect only after a restart");
                        }
                        // What runs now: the reloadable part of the new file, the rest as started.
                        running.seeds = c.seeds;
                        running.handlers = c.handlers;
                        if log_error.is_none() {
                            running.log_level = c.log_level;
                        }
                    }
                    Err(e) => warn!(error = %e, "SIGHUP: configuration not reloaded"),
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
}
