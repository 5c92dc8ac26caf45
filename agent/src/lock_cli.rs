//! `chorus lock NAME -- COMMAND...`: runs a command only while holding a lock; `chorus elect
//! NAME VALUE [-- COMMAND...]` does the same as the leader of a named election that proclaims
//! VALUE (without a command it leads until SIGINT or SIGTERM, then resigns), and `chorus elect
//! NAME --observe` / `chorus leader` show who leads.
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
use serde_json::json;
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
    /// The lease and the agent.
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// The lease options `chorus lock` and `chorus elect` share.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaseArgs {
    /// The lease.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// How long after an expiry nobody may take over.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lock_delay: Duration,
    /// How long after SIGTERM the command gets SIGKILL.
    #[arg(long, default_value = "150ms", value_parser = humantime::parse_duration)]
    pub kill_after: Duration,
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    pub api: String,
}

/// The arguments of `chorus elect`.
#[derive(Debug, Clone, clap::Args)]
pub struct ElectArgs {
    /// The election.
    pub name: String,
    /// What the leader proclaims (UTF-8 text, at most 4 KiB); not with --observe.
    pub value: Option<String>,
    /// A command to run while leading (after `--`); without one, `chorus elect` leads until
    /// SIGINT or SIGTERM and then resigns.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Only show who leads and what it proclaimed (exit 3 when nobody leads); with --watch,
    /// follow changes.
    #[arg(long)]
    pub observe: bool,
    /// With --observe: keep watching, a line per change.
    #[arg(long, requires = "observe")]
    pub watch: bool,
    /// With --observe: print the API's JSON.
    #[arg(long, requires = "observe")]
    pub json: bool,
    /// The candidate's name (default: this host's name and the process id).
    #[arg(long)]
    pub candidate: Option<String>,
    /// The lease and the agent.
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// What `chorus lock` and `chorus elect` hold, and how: one loop serves both.
#[derive(Debug, Clone)]
struct Hold {
    /// `/v1/lock/NAME` or `/v1/election/NAME`.
    path: String,
    /// The lock or election's name, for the command's environment.
    name: String,
    /// The query parameter that names the holder: `owner` or `candidate`.
    who: &'static str,
    /// The holder.
    owner: String,
    /// The campaign's body (the proclamation); empty for a lock.
    body: Vec<u8>,
    /// How messages start.
    label: &'static str,
    /// The command, if any.
    command: Vec<String>,
    /// The lease and the agent.
    lease: LeaseArgs,
}

/// This host's name and the process id: the default owner or candidate.
fn default_owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// A grant: the fencing token and until when the holder may act.
#[derive(Debug, Clone, Copy)]
struct Grant {
    token: u64,
    until: Instant,
}

fn enc(s: &str) -> String {
    crate::cli::encode_segment(s)
}

impl Hold {
    /// `PATH?who=OWNER` plus `rest`.
    fn query(&self, suffix: &str, rest: &str) -> String {
        format!(
            "{}{suffix}?{}={}{rest}",
            self.path,
            self.who,
            enc(&self.owner)
        )
    }
}

/// Asks once (the agent waits up to `wait`); `Ok(None)` when another still holds it.
fn acquire(c: &Client, h: &Hold, wait: Duration) -> Result<Option<Grant>, CliError> {
    let sent = Instant::now();
    let q = h.query(
        "",
        &format!(
            "&ttl={}ms&lock_delay={}ms&wait={}ms",
            h.lease.ttl.as_millis(),
            h.lease.lock_delay.as_millis(),
            wait.as_millis()
        ),
    );
    match c.call("PUT", &q, Some(h.body.clone())) {
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
    hold(Hold {
        path: format!("/v1/lock/{}", enc(&a.name)),
        name: a.name,
        who: "owner",
        owner: a.owner.unwrap_or_else(default_owner),
        body: Vec::new(),
        label: "chorus lock",
        command: a.command,
        lease: a.lease,
    })
}

/// Runs `chorus elect`.
pub fn elect(a: ElectArgs) -> ExitCode {
    let path = format!("/v1/election/{}", enc(&a.name));
    if a.observe {
        if a.value.is_some() || !a.command.is_empty() {
            eprintln!("error: --observe takes no value and no command");
            return ExitCode::from(2);
        }
        return observe(
            &a.lease.api,
            &path,
            a.json,
            a.watch,
            |v| match v["leader"].as_str() {
                Some(l) => format!(
                    "{l} (fencing token {}): {}",
                    v["fencing_token"],
                    v["value"].as_str().unwrap_or("(nothing proclaimed yet)")
                ),
                None => "no leader".to_string(),
            },
        );
    }
    let Some(value) = a.value else {
        eprintln!("error: give the value to proclaim (or --observe)");
        return ExitCode::from(2);
    };
    hold(Hold {
        path,
        name: a.name,
        who: "candidate",
        owner: a.candidate.unwrap_or_else(default_owner),
        body: value.into_bytes(),
        label: "chorus elect",
        command: a.command,
        lease: a.lease,
    })
}

/// Gets the lock or election, runs the command (if any) while it holds, renews, stops the command
/// when it may no longer act, and releases (resigns) at the end.
fn hold(h: Hold) -> ExitCode {
    install_signal_handlers();
    let c = Client::with_limits(&h.lease.api, Duration::from_secs(90), 1 << 20);
    // Acquire, however long it takes; a side without quorum keeps waiting.
    let first = loop {
        if SIGNALLED.load(Ordering::SeqCst) != 0 {
            return ExitCode::from(130);
        }
        match acquire(&c, &h, Duration::from_secs(60)) {
            Ok(Some(g)) => break g,
            Ok(None) => {}
            Err(CliError::Api { code, message })
                if code == "bad_request" || code == "too_large" =>
            {
                eprintln!("error: {code}: {message}");
                return ExitCode::from(6);
            }
            Err(e) => {
                eprintln!("{}: {e}; trying again", h.label);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    eprintln!(
        "{}: holding {} with fencing token {}",
        h.label, h.name, first.token
    );
    let mut child = match h.command.first() {
        None => None,
        Some(program) => match Command::new(program)
            .args(&h.command[1..])
            .env("CHORUS_LOCK_NAME", &h.name)
            .env("CHORUS_LOCK_OWNER", &h.owner)
            .env("CHORUS_FENCING_TOKEN", first.token.to_string())
            .spawn()
        {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: cannot start {program:?}: {e}");
                release(&c, &h, first.token);
                return ExitCode::from(1);
            }
        },
    };
    let (renewals, renewed) = mpsc::channel::<Option<Grant>>();
    let stop = Arc::new(AtomicBool::new(false));
    let renewer = {
        let (c, h, stop) = (
            Client::with_limits(&h.lease.api, h.lease.ttl / 3, 1 << 20),
            h.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || renew_loop(&c, &h, first, &stop, renewals))
    };
    let mut grant = Some(first);
    let mut lost = false;
    let mut termed: Option<Instant> = None;
    let status = loop {
        if let Some(ch) = child.as_mut()
            && let Ok(Some(status)) = ch.try_wait()
        {
            break Some(status);
        }
        match renewed.recv_timeout(Duration::from_millis(20)) {
            Ok(Some(g)) => {
                grant = grant.map(|old| Grant {
                    until: g.until.max(old.until),
                    ..g
                })
            }
            Ok(None) => {
                // The agent said it is someone else's now: stop at once.
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
                eprintln!("{}: the lease may have run out: stopping", h.label);
            }
            let Some(ch) = child.as_ref() else {
                break None;
            };
            signal(ch, libc::SIGTERM);
            termed = Some(now);
        }
        if let Some(ch) = child.as_ref()
            && termed.is_some_and(|t| now >= t + h.lease.kill_after)
        {
            signal(ch, libc::SIGKILL);
        }
    };
    stop.store(true, Ordering::SeqCst);
    drop(renewed);
    let token = grant.map_or(first.token, |g| g.token);
    if !lost {
        release(&c, &h, token);
    }
    let _ = renewer.join();
    if lost {
        return ExitCode::from(EXIT_LOST);
    }
    use std::os::unix::process::ExitStatusExt;
    match status.map(|s| (s.code(), s.signal())) {
        None => ExitCode::SUCCESS,
        Some((Some(code), _)) => ExitCode::from(code.clamp(0, 255) as u8),
        Some((None, Some(sig))) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        Some(_) => ExitCode::FAILURE,
    }
}

/// Renews a third of the way through each lease; sends each new grant, or `None` once the lock
/// is lost, and stops when the receiver is gone.
fn renew_loop(
    c: &Client,
    h: &Hold,
    first: Grant,
    stop: &AtomicBool,
    out: mpsc::Sender<Option<Grant>>,
) {
    let mut token = first.token;
    let mut next = Instant::now() + h.lease.ttl / 3;
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
        let q = h.query("/renew", &format!("&token={token}"));
        match c.call("POST", &q, Some(Vec::new())) {
            Ok(r) => match grant(sent, &r.body) {
                Ok(g) => {
                    token = g.token;
                    if out.send(Some(g)).is_err() {
                        return;
                    }
                    next = sent + h.lease.ttl / 3;
                }
                Err(e) => {
                    eprintln!("{}: renewal: {e}", h.label);
                    next = Instant::now() + Duration::from_millis(200);
                }
            },
            Err(CliError::Api { code, message }) if code == "lost" => {
                eprintln!("{}: {message}", h.label);
                let _ = out.send(None);
                return;
            }
            // No quorum, a timeout, the agent away: the lease runs on; try again soon.
            Err(e) => {
                eprintln!("{}: renewal failed ({e}); the lease runs on", h.label);
                next = Instant::now() + Duration::from_millis(200);
            }
        }
    }
}

fn release(c: &Client, h: &Hold, token: u64) {
    let q = h.query("", &format!("&token={token}"));
    if let Err(e) = c.call("DELETE", &q, None) {
        eprintln!("{}: release: {e} (the lease runs out by itself)", h.label);
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
    observe(
        &a.api,
        "/v1/leader",
        a.json,
        a.watch,
        |v| match v["leader"].as_str() {
            Some(name) => format!(
                "{name} (fencing token {}){}",
                v["fencing_token"],
                if v["this_node"] == true {
                    ", this node"
                } else {
                    ""
                }
            ),
            None => "no leader".to_string(),
        },
    )
}

/// Shows who leads at `path` (`/v1/leader` or an election): once (exit 3 when nobody leads), or
/// with `watch` a line per change, polling every second.
fn observe(
    api: &str,
    path: &str,
    json: bool,
    watch: bool,
    human: impl Fn(&serde_json::Value) -> String,
) -> ExitCode {
    let c = Client::new(api);
    let mut last: Option<serde_json::Value> = None;
    loop {
        let v = match c.get_json(path) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                if !watch {
                    return ExitCode::from(e.exit_code());
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // A change is a new leader, token or proclamation (not the age of the last change).
        let now = json!([v["leader"], v["fencing_token"], v["value"]]);
        if last.as_ref() != Some(&now) {
            if json {
                println!("{v}");
            } else {
                println!("{}", human(&v));
            }
            last = Some(now);
        }
        if !watch {
            return if v["leader"].is_null() {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            };
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
