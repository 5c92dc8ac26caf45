//! Event handlers: commands run on events (`[[handlers]]`), the "node up/down alert" an operator
//! wires to a pager.
//!
//! Each handler names the event types it wants and a command. The command gets the event as JSON
//! on standard input and in environment variables (`CHORUS_EVENT`, `CHORUS_EVENT_SEQ`,
//! `CHORUS_MEMBER_NAME`, `CHORUS_MEMBER_ID`, `CHORUS_MEMBER_ADDR`, `CHORUS_QUORUM_REACHABLE`,
//! `CHORUS_QUORUM_REQUIRED`, `CHORUS_NODE_NAME`, `CHORUS_DATACENTER`, and for the types that
//! have them `CHORUS_STORE`, `CHORUS_KEY`, `CHORUS_FENCING_TOKEN`). At most 4 run at once and
//! 256 wait; beyond that an event is dropped for that handler, counted and logged. A command
//! that runs past its timeout is killed. Exit status and standard error are logged. Nothing a
//! handler does can block the node: they run on their own tasks, fed from the event stream.

use crate::config::{ConfigError, HandlerDecl};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tracing::{info, warn};

/// Handlers running at once.
pub const CONCURRENCY: usize = 4;
/// Handler runs waiting to start.
pub const QUEUE: usize = 256;
/// Bytes of a handler's standard error kept for the log.
const STDERR_KEEP: usize = 2048;

/// One configured handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// The event types it runs for (empty: every type but key changes).
    pub events: Vec<String>,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
}

impl Handler {
    /// A handler from the config file's entry number `i`; errors name the key.
    pub fn from_decl(i: usize, d: HandlerDecl) -> Result<Handler, ConfigError> {
        let key = |k: &str| format!("handlers[{i}].{k}");
        let invalid = |k: &str, m: String| ConfigError::Invalid {
            key: key(k),
            message: m,
        };
        if d.command.is_empty() || d.command[0].trim().is_empty() {
            return Err(invalid(
                "command",
                "must name a program, e.g. [\"/usr/local/bin/page\", \"ops\"]".into(),
            ));
        }
        if d.events.is_empty() {
            return Err(invalid(
                "events",
                "must list event types, or [\"*\"] for all".into(),
            ));
        }
        let mut events = Vec::new();
        for e in &d.events {
            if e == "*" {
                events.clear();
                break;
            }
            if !node::EVENT_TYPES.contains(&e.as_str()) {
                return Err(invalid(
                    "events",
                    format!(
                        "{e:?} is not an event type; known: {}",
                        node::EVENT_TYPES.join(", ")
                    ),
                ));
            }
            events.push(e.clone());
        }
        let timeout = match &d.timeout {
            None => Duration::from_secs(30),
            Some(t) => humantime::parse_duration(t)
                .map_err(|e| invalid("timeout", format!("{t:?}: {e}")))?,
        };
        if timeout.is_zero() || timeout > Duration::from_secs(3600) {
            return Err(invalid(
                "timeout",
                format!("{timeout:?} is not in 1ms..=1h"),
            ));
        }
        Ok(Handler {
            events,
            command: d.command,
            timeout,
        })
    }

    fn wants(&self, t: &str) -> bool {
        if self.events.is_empty() {
            t != "key_changed"
        } else {
            self.events.iter().any(|e| e == t)
        }
    }
}

/// Handler runs dropped because the queue was full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Handler runs by outcome, for `/metrics`: ok, failed (a non-zero exit), timeout, not_started.
pub static RUNS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];
/// The outcome names of [`RUNS`], in order.
pub const OUTCOMES: [&str; 4] = ["ok", "failed", "timeout", "not_started"];
/// Milliseconds spent in finished handler runs, for `/metrics`.
pub static RUN_MS: AtomicU64 = AtomicU64::new(0);

fn count(outcome: usize) {
    RUNS[outcome].fetch_add(1, Ordering::Relaxed);
}

/// What this node is, for the handlers' environment.
#[derive(Debug, Clone)]
pub struct Local {
    /// This node's name.
    pub name: String,
    /// Its datacenter.
    pub datacenter: String,
}

/// Replaces the running handlers (a SIGHUP reload).
pub type Reload = tokio::sync::watch::Sender<Arc<Vec<Handler>>>;

/// Runs the handlers on the events from `events` until it closes; the returned sender replaces
/// them (runs already queued or running finish with the handlers they started with).
pub fn spawn(
    handlers: Vec<Handler>,
    local: Local,
    mut events: broadcast::Receiver<Arc<crate::events::Shared>>,
) -> Reload {
    let (reload, current) = tokio::sync::watch::channel(Arc::new(handlers));
    let (tx, mut rx) = mpsc::channel::<(usize, Handler, Arc<crate::events::Shared>)>(QUEUE);
    tokio::spawn(async move {
        loop {
            let v = match events.recv().await {
                Ok(v) => v,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Only worth a warning if some handler could have wanted them: with none
                    // configured, a wiped node catching up 300,000 keys logged it a dozen times.
                    if !current.borrow().is_empty() {
                        warn!(
                            missed = n,
                            "event handlers fell behind the event stream; events missed"
                        );
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let handlers = current.borrow().clone();
            for (i, h) in handlers.iter().enumerate() {
                if h.wants(v.type_name()) && tx.try_send((i, h.clone(), v.clone())).is_err() {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        handler = i,
                        event = v.type_name(),
                        seq = v.seq(),
                        "event handler queue full ({QUEUE}): this run is dropped"
                    );
                }
            }
        }
    });
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let local = Arc::new(local);
    tokio::spawn(async move {
        while let Some((i, h, v)) = rx.recv().await {
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let local = local.clone();
            tokio::spawn(async move {
                run_one(i, &h, &local, v.json()).await;
                drop(permit);
            });
        }
    });
    reload
}

/// The environment a handler gets for event `v`.
fn environment(v: &Value, local: &Local) -> Vec<(&'static str, String)> {
    let s = |x: &Value| match x {
        Value::String(t) => t.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut env = vec![
        ("CHORUS_EVENT", s(&v["type"])),
        ("CHORUS_EVENT_SEQ", s(&v["seq"])),
        ("CHORUS_EVENT_TIME_MS", s(&v["time_ms"])),
        ("CHORUS_NODE_NAME", local.name.clone()),
        ("CHORUS_DATACENTER", local.datacenter.clone()),
    ];
    if let Some(m) = v.get("member") {
        env.push(("CHORUS_MEMBER_NAME", s(&m["name"])));
        env.push(("CHORUS_MEMBER_ID", s(&m["id"])));
        env.push(("CHORUS_MEMBER_ADDR", s(&m["addr"])));
        env.push(("CHORUS_MEMBER_GENERATION", s(&m["generation"])));
    }
    if let Some(q) = v.get("quorum") {
        env.push(("CHORUS_QUORUM_REACHABLE", s(&q["reachable_votes"])));
        env.push(("CHORUS_QUORUM_REQUIRED", s(&q["required_votes"])));
    }
    for (field, var) in [
        ("store", "CHORUS_STORE"),
        ("key", "CHORUS_KEY"),
        ("version", "CHORUS_VERSION"),
        ("fencing_token", "CHORUS_FENCING_TOKEN"),
        ("reason", "CHORUS_REASON"),
    ] {
        if let Some(x) = v.get(field) {
            env.push((var, s(x)));
        }
    }
    env
}

/// Runs handler `i` for event `v`: the JSON on standard input, killed at its timeout.
async fn run_one(i: usize, h: &Handler, local: &Local, v: &Value) {
    let event = v["type"].as_str().unwrap_or("event");
    let seq = v["seq"].as_u64().unwrap_or(0);
    let mut cmd = tokio::process::Command::new(&h.command[0]);
    cmd.args(&h.command[1..])
        .envs(environment(v, local))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            count(3);
            warn!(handler = i, command = %h.command[0], event, seq, error = %e,
                "cannot start event handler");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let body = v.to_string();
        // A handler that does not read its input is not an error.
        let _ = stdin.write_all(body.as_bytes()).await;
    }
    let started = std::time::Instant::now();
    match tokio::time::timeout(h.timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let took_ms = started.elapsed().as_millis() as u64;
            RUN_MS.fetch_add(took_ms, Ordering::Relaxed);
            count(if out.status.success() { 0 } else { 1 });
            let stderr = String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(STDERR_KEEP)])
                .trim()
                .to_string();
            if out.status.success() {
                info!(handler = i, command = %h.command[0], event, seq, took_ms, "event handler ran");
            } else {
                warn!(handler = i, command = %h.command[0], event, seq, took_ms,
                    status = %out.status, stderr = %stderr, "event handler failed");
            }
        }
        Ok(Err(e)) => {
            count(1);
            warn!(handler = i, command = %h.command[0], event, seq, error = %e,
                "event handler could not be waited for")
        }
        Err(_) => {
            count(2);
            RUN_MS.fetch_add(h.timeout.as_millis() as u64, Ordering::Relaxed);
            warn!(handler = i, command = %h.command[0], event, seq,
                timeout = ?h.timeout, "event handler timed out and was killed")
        }
    }
}
