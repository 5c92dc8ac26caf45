//! A cluster of real agents on loopback for the benchmarks (not the namespaced `Lab`): each agent
//! on its own gossip and API port, seeded from the first, started with a given fsync policy; the
//! agents are killed when the cluster is dropped, also on a panic.

#![allow(dead_code)] // each bench uses a part

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub children: Vec<Child>,
    pub apis: Vec<String>,
    pub commands: Vec<Vec<std::ffi::OsString>>,
    /// The agent binary `restart` runs (the one this build made, unless a bench swaps it).
    pub bin: std::path::PathBuf,
    fsync: String,
    _dir: tempfile::TempDir,
}

/// Agents log warnings, and membership events (failures, quorum changes) to explain errors.
const AGENT_LOG: &str = "warn,membership=info";

/// The agents' log filter: `CHORUS_BENCH_LOG` when set (a bench run that wants the store's debug
/// lines, say), else [`AGENT_LOG`].
fn agent_log() -> String {
    std::env::var("CHORUS_BENCH_LOG").unwrap_or_else(|_| AGENT_LOG.into())
}

impl Cluster {
    /// Membership failures and quorum changes in every agent's log so far, each with its agent.
    pub fn trouble(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.children.len() {
            let text = std::fs::read_to_string(self._dir.path().join(format!("n{i}.log")))
                .unwrap_or_default();
            out.extend(
                text.lines()
                    .filter(|l| {
                        l.contains("MemberFailed")
                            || l.contains("MemberSuspect")
                            || l.contains("quorum")
                    })
                    .map(|l| format!("n{i}: {l}")),
            );
        }
        out
    }

    /// Kills agent `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// Starts agent `i` again with the same arguments and data dir.
    pub fn restart(&mut self, i: usize) {
        self.children[i] = Command::new(&self.bin)
            .args(&self.commands[i])
            .env("CHORUS_LOG", agent_log())
            .env("CHORUS_STORE_FSYNC", &self.fsync)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(self._dir.path().join(format!("n{i}.log")))
                    .expect("agent log"),
            )
            .spawn()
            .expect("respawn agent");
    }
}

pub fn status(api: &str) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(format!("http://{api}/v1/status"))
        .call()
        .ok()?
        .body_mut()
        .read_json()
        .ok()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn start(n: usize, fsync: &str) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = 17000 + (std::process::id() % 1000) as u16 * 10;
    let mut children = Vec::new();
    let mut apis = Vec::new();
    let mut commands = Vec::new();
    for i in 0..n {
        let gossip = format!("127.0.0.1:{}", base + i as u16);
        let api = format!("127.0.0.1:{}", base + 5000 + i as u16);
        let log = std::fs::File::create(dir.path().join(format!("n{i}.log"))).expect("log");
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        for a in [
            "agent",
            "--name",
            &format!("n{i}"),
            "--bind",
            &gossip,
            "--api",
            &api,
        ] {
            argv.push(a.into());
        }
        for a in [
            "--seed".to_string(),
            format!("127.0.0.1:{base}"),
            "--expected-nodes".into(),
            n.to_string(),
        ] {
            argv.push(a.into());
        }
        argv.push("--data-dir".into());
        argv.push(dir.path().join(format!("d{i}")).into_os_string());
        commands.push(argv.clone());
        let child = Command::new(env!("CARGO_BIN_EXE_chorus"))
            .args(&argv)
            .env("CHORUS_LOG", agent_log())
            .env("CHORUS_STORE_FSYNC", fsync)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        children.push(child);
        apis.push(api);
    }
    let cluster = Cluster {
        children,
        apis,
        commands,
        bin: env!("CARGO_BIN_EXE_chorus").into(),
        fsync: fsync.to_string(),
        _dir: dir,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = cluster.apis.iter().all(|a| {
            agent
                .get(format!("http://{a}/v1/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok())
                .is_some_and(|v| {
                    v["members"]["alive"].as_u64() == Some(n as u64)
                        && v["quorum"]["has_quorum"] == true
                })
        });
        if ready {
            return cluster;
        }
        assert!(
            Instant::now() < deadline,
            "cluster of {n} did not form in 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
