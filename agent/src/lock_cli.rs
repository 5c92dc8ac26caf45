//! `chorus lock NAME -- COMMAND...`: runs a command only while holding a lock.
//!
//! It acquires the lock (waiting as long as it takes), starts the command with the fencing token
//! in `CHORUS_FENCING_TOKEN`, renews the lease a third of the way through, and stops the command
//! as soon as it may no longer act: SIGTERM when the acting window of its last grant runs out
//! (a renewal that was refused, or that no quorum answered, does not extend it), SIGKILL
//! `--kill-after` later. The window already leaves the lease's margin for that: with the default
//! 150 ms the command is gone before the grantors let anyone else in. When the command exits the
//! lock is released and `chorus lock` exits with the command's status (8 when it had to stop the
//! command because the lock was lost).

use crate::cli::{CliError, Client};
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Exit status when the lock was lost and the command had to be stopped.
pub const EXIT_LOST: u8 = 8;

/// The arguments of `chorus lock`.
#[derive(Debug, Clone, clap::Args)]
pub struct LockArgs {
    /// The lock.
    pub name: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    /// The owner named in the lock (default: this host's name and the process id).
    #[arg(long)]
    pub owner: Option<String>,
    /// The lease.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// How long after an expiry nobody may take the lock.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lock_delay: Duration,
    /// How long after SIGTERM the command gets SIGKILL.
    #[arg(long, default_value = "150ms", value_parser = humantime::parse_duration)]
    pub kill_after: Duration,
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    pub api: String,
}

/// A grant: the fencing token and until when the holder may act.
#[derive(Debug, Clone, Copy)]
struct Grant {
    token: u64,
    until: Instant,
}

fn path(name: &str) -> String {
    format!("/v1/lock/{}", crate::cli::encode_segment(name))
}

fn enc(s: &str) -> String {
    crate::cli::encode_segment(s)
}

/// Asks for the lock once (the agent waits up to `wait`); `Ok(None)` when it is still held.
fn acquire(
    c: &Client,
    a: &LockArgs,
    owner: &str,
    wait: Duration,
) -> Result<Option<Grant>, CliError> {
    let sent = Instant::now();
    let q = format!(
        "{}?owner={}&ttl={}ms&lock_delay={}ms&wait={}ms",
        path(&a.name),
        enc(owner),
        a.ttl.as_millis(),
        a.lock_delay.as_millis(),
        wait.as_millis()
    );
    match c.call("PUT", &q, Some(Vec::new())) {
        Ok(r) => grant(sent, &r.body).map(Some),
        Err(CliError::Api { code, .. }) if code == "locked" => Ok(None),
        Err(e) => Err(e),
    }
}

fn grant(sent: Instant, body: &[u8]) -> Result<Grant, CliError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| CliError::Protocol(e.to_string()))?;
    let (Some(token), Some(act)) = (v["fencing_token"].as_u64(), v["act_for_ms"].as_u64()) else {
        return Err(CliError::Protocol(format!(
            "a lock answer without a token: {v}"
        )));
    };
    Ok(Grant {
        token,
        until: sent + Duration::from_millis(act),
    })
}

/// The signal `chorus lock` itself received (SIGTERM or SIGINT), 0 while none.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid; the child is not reaped yet, so the pid is its.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Runs `chorus lock`.
pub fn run(a: LockArgs) -> ExitCode {
    install_signal_handlers();
    let owner = a.owner.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let c = Client::with_limits(&a.api, Duration::from_secs(90), 1 << 20);
    // Acquire, however long it takes; a side without quorum keeps waiting.
    let first = loop {
        if SIGNALLED.load(Ordering::SeqCst) != 0 {
            return ExitCode::from(130);
        }
        match acquire(&c, &a, &owner, Duration::from_secs(60)) {
            Ok(Some(g)) => break g,
            Ok(None) => {}
            Err(CliError::Api { code, message }) if code == "bad_request" => {
                eprintln!("error: {code}: {message}");
                return ExitCode::from(6);
            }
            Err(e) => {
                eprintln!("chorus lock: {e}; trying again");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    eprintln!(
        "chorus lock: holding {} with fencing token {}",
        a.name, first.token
    );
    let mut child = match Command::new(&a.command[0])
        .args(&a.command[1..])
        .env("CHORUS_LOCK_NAME", &a.name)
        .env("CHORUS_LOCK_OWNER", &owner)
        .env("CHORUS_FENCING_TOKEN", first.token.to_string())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start {:?}: {e}", a.command[0]);
            release(&c, &a, &owner, first.token);
            return ExitCode::from(1);
        }
    };
    let (renewals, renewed) = mpsc::channel::<Option<Grant>>();
    let stop = Arc::new(AtomicBool::new(false));
    let renewer = {
        let (c, a, owner, stop) = (
            Client::with_limits(&a.api, a.ttl / 3, 1 << 20),
            a.clone(),
            owner.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || renew_loop(&c, &a, &owner, first, &stop, renewals))
    };
    let mut grant = Some(first);
    let mut lost = false;
    let mut termed: Option<Instant> = None;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        match renewed.recv_timeout(Duration::from_millis(20)) {
            Ok(Some(g)) => {
                grant = grant.map(|old| Grant {
                    until: g.until.max(old.until),
                    ..g
                })
            }
            Ok(None) => {
                // The agent said the lock is someone else's now: stop at once.
                lost = true;
                grant = grant.map(|g| Grant {
                    until: Instant::now(),
                    ..g
                });
            }
            Err(_) => {}
        }
        let now = Instant::now();
        let signalled = SIGNALLED.load(Ordering::SeqCst);
        let expired = grant.is_some_and(|g| now >= g.until);
        if termed.is_none() && (expired || signalled != 0) {
            if expired {
                lost = true;
                eprintln!("chorus lock: the lease may have run out: stopping the command");
            }
            signal(&child, libc::SIGTERM);
            termed = Some(now);
        }
        if termed.is_some_and(|t| now >= t + a.kill_after) {
            signal(&child, libc::SIGKILL);
        }
    };
    stop.store(true, Ordering::SeqCst);
    drop(renewed);
    let token = grant.map_or(first.token, |g| g.token);
    if !lost {
        release(&c, &a, &owner, token);
    }
    let _ = renewer.join();
    if lost {
        return ExitCode::from(EXIT_LOST);
    }
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    }
}

/// Renews a third of the way through each lease; sends each new grant, or `None` once the lock
/// is lost, and stops when the receiver is gone.
fn renew_loop(
    c: &Client,
    a: &LockArgs,
    owner: &str,
    first: Grant,
    stop: &AtomicBool,
    out: mpsc::Sender<Option<Grant>>,
) {
    let mut token = first.token;
    let mut next = Instant::now() + a.ttl / 3;
    loop {
        // Sleep in short steps so that the end of the command ends this thread soon.
        while Instant::now() < next {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let sent = Instant::now();
        let q = format!("{}/renew?owner={}&token={token}", path(&a.name), enc(owner));
        match c.call("POST", &q, Some(Vec::new())) {
            Ok(r) => match grant(sent, &r.body) {
                Ok(g) => {
                    token = g.token;
                    if out.send(Some(g)).is_err() {
                        return;
                    }
                    next = sent + a.ttl / 3;
                }
                Err(e) => {
                    eprintln!("chorus lock: renewal: {e}");
                    next = Instant::now() + Duration::from_millis(200);
                }
            },
            Err(CliError::Api { code, message }) if code == "lost" => {
                eprintln!("chorus lock: {message}");
                let _ = out.send(None);
                return;
            }
            // No quorum, a timeout, the agent away: the lease runs on; try again soon.
            Err(e) => {
                eprintln!("chorus lock: renewal failed ({e}); the lease runs on");
                next = Instant::now() + Duration::from_millis(200);
            }
        }
    }
}

fn release(c: &Client, a: &LockArgs, owner: &str, token: u64) {
    let q = format!("{}?owner={}&token={token}", path(&a.name), enc(owner));
    if let Err(e) = c.call("DELETE", &q, None) {
        eprintln!("chorus lock: release: {e} (the lease runs out by itself)");
    }
}

/// The arguments of `chorus leader`.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderArgs {
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep watching: print a line whenever the leader or its token changes.
    #[arg(long)]
    pub watch: bool,
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    pub api: String,
}

/// Runs `chorus leader`: who leads the cluster, read linearizably (exit 3 when nobody does).
pub fn leader(a: LeaderArgs) -> ExitCode {
    let c = Client::new(&a.api);
    let mut last: Option<(serde_json::Value, serde_json::Value)> = None;
    loop {
        let v = match c.get_json("/v1/leader") {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                if !a.watch {
                    return ExitCode::from(e.exit_code());
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let now = (v["leader"].clone(), v["fencing_token"].clone());
        if last.as_ref() != Some(&now) {
            if a.json {
                println!("{v}");
            } else {
                match v["leader"].as_str() {
                    Some(name) => println!(
                        "{name} (fencing token {}){}",
                        v["fencing_token"],
                        if v["this_node"] == true {
                            ", this node"
                        } else {
                            ""
                        }
                    ),
                    None => println!("no leader"),
                }
            }
            last = Some(now);
        }
        if !a.watch {
            return if v["leader"].is_null() {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            };
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
