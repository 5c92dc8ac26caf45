//! Test support for end-to-end tests: a lab of network namespaces on Linux bridges, and real
//! `chorus agent` processes inside them.
//!
//! Each lab owns one "switch" namespace holding its bridges, and one namespace per host with a veth
//! (`eth0`) into the switch. Nothing is added to the root namespace, and dropping the lab (also on a
//! panic) kills every agent and deletes every namespace it made, which removes its veths and
//! bridges with them. A partition moves host ports onto separate bridges; heal moves them back.
//!
//! Without root or `ip netns`, `Lab::new` returns a skip reason; a test prints it and returns,
//! unless `CHORUS_E2E_REQUIRE=1` (set in CI), where a skip is a failure.

#![allow(dead_code)]

use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The agent binary under test.
pub const CHORUS: &str = env!("CARGO_BIN_EXE_chorus");

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);
static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// Loads an nftables script in namespace `ns` (one atomic change), failing with nft's message.
fn nft(ns: &str, script: &str) {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft (Debian package nftables) must be installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write nft script");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Counters of what a host sends, by kind (see [`Lab::count_wire`]). Names carry a prefix: `tcp`,
/// `igmp` and `arp` are nft keywords.
const WIRE_COUNTERS: &str = r#"
table inet chorus_wire {
counter c_udp_unicast {}
counter c_multicast {}
counter c_tcp {}
counter c_igmp {}
counter c_other {}
chain out { type filter hook output priority 0; policy accept;
ip protocol igmp counter name c_igmp accept
ip daddr 224.0.0.0/4 counter name c_multicast accept
meta l4proto udp counter name c_udp_unicast accept
meta l4proto tcp counter name c_tcp accept
counter name c_other accept
}
}
table arp chorus_wire {
counter c_arp {}
chain out { type filter hook output priority 0; policy accept; counter name c_arp; }
}
"#;

/// Returns a lab, or skips the calling test with a clear message.
#[macro_export]
macro_rules! lab_or_skip {
    ($hosts:expr) => {
        match $crate::support::Lab::new($hosts) {
            Ok(lab) => lab,
            Err(reason) => {
                if std::env::var("CHORUS_E2E_REQUIRE").as_deref() == Ok("1") {
                    panic!("end-to-end test cannot run but CHORUS_E2E_REQUIRE=1: {reason}");
                }
                eprintln!("SKIPPED: {reason}");
                return;
            }
        }
    };
}

/// How an agent is configured.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Node name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// Cluster key (base64).
    pub key: String,
    /// Expected nodes.
    pub expected_nodes: u32,
    /// Seeds (`ip:port`).
    pub seeds: Vec<String>,
    /// Multicast discovery on.
    pub multicast: bool,
    /// The node's datacenter (`node.datacenter`; the agent's default when `None`).
    pub datacenter: Option<String>,
    /// More keys of the `[cluster]` section (e.g. `quorum_mode = "datacenters"`).
    pub cluster_extra: String,
    /// More TOML appended to the config (sections the lab does not write, e.g. `[store]`).
    pub extra_toml: String,
    /// `node.votes`, when not the default 1.
    pub votes: Option<u32>,
}

/// The key the tests' main cluster uses.
pub const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// A different key.
pub const KEY_B: &str = "HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

impl AgentSpec {
    /// A member of cluster "e2e" expecting `n` nodes, found by multicast.
    pub fn new(name: &str, n: u32) -> Self {
        AgentSpec {
            name: name.into(),
            cluster: "e2e".into(),
            key: KEY_A.into(),
            expected_nodes: n,
            seeds: vec![],
            multicast: true,
            extra_toml: String::new(),
            votes: None,
            datacenter: None,
            cluster_extra: String::new(),
        }
    }
}

/// Where `cmd` is on the `PATH`, if anywhere (benches compare with peers only when installed).
#[allow(dead_code)] // used by some test targets only
pub fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

/// The first line `cmd arg` prints (a peer's version, for a benchmark's report; empty if it
/// cannot run).
#[allow(dead_code)] // used by some bench targets only
pub fn version_of(cmd: &str, arg: &str) -> String {
    std::process::Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// Seconds on CLOCK_MONOTONIC: the clock Python's `time.monotonic()` reads in every namespace, so
/// a helper script's timestamps compare with the test's.
#[allow(dead_code)] // used by some test targets only
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A running (or stopped) agent.
pub struct Agent {
    /// Host index it runs on.
    pub host: usize,
    /// Its spec.
    pub spec: AgentSpec,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

/// A set of hosts in namespaces on bridges, and the agents on them.
pub struct Lab {
    prefix: String,
    switch: String,
    hosts: Vec<String>,
    bridges: usize,
    dir: tempfile::TempDir,
    /// Agents started so far, by index.
    pub agents: Vec<Agent>,
    _guard: MutexGuard<'static, ()>,
}

impl Lab {
    /// Builds `n` hosts on one bridge, or says why it cannot.
    pub fn new(n: usize) -> Result<Lab, String> {
        if Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout != b"0\n")
            .unwrap_or(true)
        {
            return Err("end-to-end tests need root to create network namespaces".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("the `ip` command (iproute2) is not installed".into());
        }
        let guard = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let seq = LAB_SEQ.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("chr{}x{}", std::process::id(), seq);
        let switch = format!("{prefix}sw");
        let probe = Command::new("ip")
            .args(["netns", "add", &switch])
            .output()
            .map_err(|e| e.to_string())?;
        if !probe.status.success() {
            return Err(format!(
                "cannot create a network namespace: {}",
                String::from_utf8_lossy(&probe.stderr)
            ));
        }
        let mut lab = Lab {
            prefix: prefix.clone(),
            switch,
            hosts: Vec::new(),
            bridges: 0,
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            agents: Vec::new(),
            _guard: guard,
        };
        lab.add_bridge();
        for i in 0..n {
            lab.add_host(i);
        }
        Ok(lab)
    }

    fn add_bridge(&mut self) -> String {
        let br = format!("br{}", self.bridges);
        self.bridges += 1;
        ip(&["-n", &self.switch, "link", "add", &br, "type", "bridge"]);
        // Flood multicast: without an IGMP querier, snooping would drop beacons unpredictably.
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &br,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &self.switch, "link", "set", &br, "up"]);
        br
    }

    fn add_host(&mut self, i: usize) {
        let ns = format!("{}h{}", self.prefix, i);
        ip(&["netns", "add", &ns]);
        let port = format!("v{i}");
        ip(&[
            "-n",
            &self.switch,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        let addr = format!("{}/24", self.ip(i));
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        // Multicast needs a route (or an explicit interface) in every namespace.
        ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        self.hosts.push(ns);
    }

    /// Adds one more host on the main bridge; returns its index.
    pub fn add_extra_host(&mut self) -> usize {
        let i = self.hosts.len();
        self.add_host(i);
        i
    }

    /// The address of host `i`.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, (i / 200) as u8, (i % 200) as u8 + 1)
    }

    /// The namespace of host `i`.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// Runs a command inside host `i`'s namespace.
    pub fn exec(&self, i: usize, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i]]).args(args);
        c.output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.hosts[i]))
    }

    /// Starts a command inside host `i`'s namespace without waiting for it; the caller stops it
    /// (a `Background` kills it when dropped, also on a panic).
    #[allow(dead_code)] // used by some test targets only
    pub fn spawn_in(&self, i: usize, args: &[&str]) -> Background {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i]])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {}: {e}", self.hosts[i]));
        Background(child)
    }

    /// Starts counting what host `i` sends, by kind, with nftables counters in its namespace
    /// (read with [`Lab::wire`]). Counting starts at zero; the counters go with the namespace.
    pub fn count_wire(&self, i: usize) {
        // Rules run in order and each accepts, so every packet is counted once. The inet output
        // hook sees IP packets (IGMP included), the arp one ARP; IPv6 (neighbour discovery,
        // MLD) falls into `other`.
        nft(&self.hosts[i], WIRE_COUNTERS);
    }

    /// What host `i` has sent on its interface so far: the interface's own byte and packet
    /// counters (Ethernet frames, what an operator's interface counters show) and, when
    /// [`Lab::count_wire`] was called, the same split by kind (Ethernet headers included).
    pub fn wire(&self, i: usize) -> Wire {
        let stat = |name: &str| -> u64 {
            let out = self.exec(
                i,
                &["cat", &format!("/sys/class/net/eth0/statistics/{name}")],
            );
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        };
        let mut w = Wire {
            tx_bytes: stat("tx_bytes"),
            tx_packets: stat("tx_packets"),
            kinds: std::collections::BTreeMap::new(),
        };
        for family in ["inet", "arp"] {
            let out = self.exec(i, &["nft", "list", "table", family, "chorus_wire"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let mut name = String::new();
            for line in text.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["counter", n, "{"] => name = n.trim_start_matches("c_").to_string(),
                    ["packets", p, "bytes", b] if !name.is_empty() => {
                        let p: u64 = p.parse().unwrap_or(0);
                        let b: u64 = b.parse().unwrap_or(0);
                        // The hooks see the IP (or ARP) packet; the interface adds 14 bytes of
                        // Ethernet header to each (a veth pads nothing).
                        // (The arp hook's count already includes it.)
                        let eth = if family == "arp" { 0 } else { 14 * p };
                        w.kinds.insert(name.clone(), (p, b + eth));
                        name.clear();
                    }
                    _ => {}
                }
            }
        }
        w
    }

    /// Splits the hosts into groups, each on its own bridge; hosts in no group stay on br0.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        while self.bridges < groups.len() + 1 {
            self.add_bridge();
        }
        for (g, hosts) in groups.iter().enumerate() {
            for h in *hosts {
                self.set_port(*h, Some(&format!("br{}", g + 1)));
            }
        }
    }

    /// Attaches host `i`'s switch port to bridge `br`, or to none.
    fn set_port(&self, i: usize, br: Option<&str>) {
        let port = format!("v{i}");
        let mut args = vec!["-n", self.switch.as_str(), "link", "set", port.as_str()];
        match br {
            Some(b) => args.extend(["master", b]),
            None => args.push("nomaster"),
        }
        ip(&args);
    }

    /// Puts each group of hosts on a bridge of its own, a datacenter, and joins every
    /// datacenter's bridge to `br0` (the WAN) through a veth link `wK`/`cK` (K = 1, 2, ...).
    /// Multicast does not cross those links (nftables in the switch drops IPv4 multicast that
    /// would go over one, as routers between sites do), unicast does. [`Lab::dc_link`] cuts and
    /// restores a datacenter's link.
    #[allow(dead_code)] // used by some test targets only
    pub fn datacenters(&mut self, dcs: &[&[usize]]) {
        for (k, hosts) in dcs.iter().enumerate() {
            let br = self.add_bridge();
            let (w, c) = (format!("w{}", k + 1), format!("c{}", k + 1));
            ip(&[
                "-n",
                &self.switch,
                "link",
                "add",
                &w,
                "type",
                "veth",
                "peer",
                "name",
                &c,
            ]);
            ip(&["-n", &self.switch, "link", "set", &w, "master", &br, "up"]);
            ip(&["-n", &self.switch, "link", "set", &c, "master", "br0", "up"]);
            for h in *hosts {
                self.set_port(*h, Some(&br));
            }
        }
        let script = "table bridge chorus_sites {\n  chain forward {\n    type filter hook forward priority 0;\n    \
                      iifname \"w*\" ip daddr 224.0.0.0/4 drop\n    oifname \"w*\" ip daddr 224.0.0.0/4 drop\n  }\n}\n";
        nft(&self.switch, script);
    }

    /// Takes datacenter `k`'s (0-based) link to the WAN down (`up = false`) or up again.
    #[allow(dead_code)] // used by some test targets only
    pub fn dc_link(&self, k: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        for link in [format!("w{}", k + 1), format!("c{}", k + 1)] {
            ip(&["-n", &self.switch, "link", "set", &link, state]);
        }
    }

    /// Cuts host `i` off from every other host.
    pub fn isolate(&mut self, i: usize) {
        self.set_port(i, None);
    }

    /// Puts every host back on the main bridge.
    pub fn heal(&mut self) {
        for i in 0..self.hosts.len() {
            self.set_port(i, Some("br0"));
        }
    }

    /// Sets the directed link cuts between hosts, replacing the previous ones: for each `(from,
    /// to)`, packets from `from` are dropped on arrival at `to` (nftables in `to`'s namespace; one
    /// atomic change per host). Cuts in both directions make a symmetric cut; one direction only, a
    /// one-way cut; cuts between some pairs only, a non-transitive partition. `&[]` restores every
    /// link. The rules go with the namespaces.
    #[allow(dead_code)] // used by some test targets only
    pub fn cut(&mut self, cuts: &[(usize, usize)]) {
        for to in 0..self.hosts.len() {
            let from: Vec<String> = cuts
                .iter()
                .filter(|(_, t)| *t == to)
                .map(|(f, _)| self.ip(*f).to_string())
                .collect();
            let rule = if from.is_empty() {
                String::new()
            } else {
                format!("    ip saddr {{ {} }} drop\n", from.join(", "))
            };
            let script = format!(
                "add table inet chorus_cut\ndelete table inet chorus_cut\n\
                 table inet chorus_cut {{\n  chain input {{\n    type filter hook input priority 0;\n{rule}  }}\n}}\n"
            );
            nft(&self.hosts[to], &script);
        }
    }

    /// Starts an agent on host `host`; returns its index in `agents`.
    pub fn start(&mut self, host: usize, spec: AgentSpec) -> usize {
        let data_dir = self.dir.path().join(format!("data-{}", spec.name));
        let config = self.dir.path().join(format!("{}.toml", spec.name));
        let log = self.dir.path().join(format!("{}.log", spec.name));
        let seeds: Vec<String> = spec.seeds.iter().map(|s| format!("{s:?}")).collect();
        let text = format!(
            "[node]\nname = {name:?}\ndata_dir = {dd:?}\n{votes}{dc}\
             [gossip]\nbind = \"{ip}:7946\"\nprofile = \"lan\"\n\
             [discovery]\nmulticast = {mc}\nmulticast_interface = \"eth0\"\nseeds = [{seeds}]\n\
             [cluster]\nname = {cluster:?}\nkey = {key:?}\nexpected_nodes = {n}\n{cluster_extra}\
             [api]\nbind = \"127.0.0.1:7947\"\n[log]\nlevel = \"info,membership=debug\"\n{extra}",
            name = spec.name,
            dd = data_dir.display().to_string(),
            votes = spec
                .votes
                .map_or(String::new(), |v| format!("votes = {v}\n")),
            dc = spec
                .datacenter
                .as_ref()
                .map_or(String::new(), |d| format!("datacenter = {d:?}\n")),
            cluster_extra = spec.cluster_extra,
            ip = self.ip(host),
            mc = spec.multicast,
            seeds = seeds.join(", "),
            cluster = spec.cluster,
            key = spec.key,
            n = spec.expected_nodes,
            extra = spec.extra_toml,
        );
        std::fs::write(&config, text).expect("write agent config");
        let mut agent = Agent {
            host,
            spec,
            data_dir,
            log,
            config,
            child: None,
        };
        self.spawn(&mut agent);
        self.agents.push(agent);
        self.agents.len() - 1
    }

    fn spawn(&self, agent: &mut Agent) {
        self.spawn_with(agent, &[]);
    }

    fn spawn_with(&self, agent: &mut Agent, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&agent.log)
            .expect("open agent log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.hosts[agent.host],
                CHORUS,
                "agent",
                "--config",
            ])
            .arg(&agent.config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn chorus agent");
        agent.child = Some(child);
    }

    /// Appends `toml` to agent `a`'s config file (read again on SIGHUP or a restart).
    #[allow(dead_code)] // used by some test targets only
    pub fn append_config(&self, a: usize, toml: &str) {
        let mut text = std::fs::read_to_string(&self.agents[a].config).expect("read config");
        text.push_str(toml);
        std::fs::write(&self.agents[a].config, text).expect("write config");
    }

    /// Replaces `from` with `to` in agent `a`'s configuration file (it must be there).
    #[allow(dead_code)] // used by some test targets only
    pub fn edit_config(&self, a: usize, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.agents[a].config).expect("read config");
        assert!(
            text.contains(from),
            "{from:?} is not in the config:\n{text}"
        );
        std::fs::write(&self.agents[a].config, text.replacen(from, to, 1)).expect("write config");
    }

    /// The process id of agent `a` (`ip netns exec` execs the agent, so it is the agent's own).
    #[allow(dead_code)] // used by some test targets only
    pub fn pid(&self, a: usize) -> u32 {
        self.agents[a].child.as_ref().expect("running").id()
    }

    /// Sends SIGHUP to agent `a` (it reloads its configuration).
    #[allow(dead_code)] // used by some test targets only
    pub fn sighup(&self, a: usize) {
        let pid = self.pid(a).to_string();
        run(Command::new("kill").args(["-HUP", &pid]));
    }

    /// Kills agent `a` with SIGKILL.
    pub fn kill9(&mut self, a: usize) {
        if let Some(mut c) = self.agents[a].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM to agent `a` and waits (bounded) for it to exit; returns its exit status.
    pub fn terminate(&mut self, a: usize) -> std::process::ExitStatus {
        let mut c = self.agents[a].child.take().expect("agent is running");
        // `ip netns exec` execs the agent, so the child's pid is the agent's.
        run(Command::new("kill").args(["-TERM", &c.id().to_string()]));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = c.try_wait().expect("wait agent") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "agent {} did not exit within 15 s of SIGTERM\n{}",
                    self.agents[a].spec.name,
                    self.log_of(a)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `n` agents n1..nN (one per host) and waits until every one lists all of them
    /// alive; returns their indices.
    pub fn start_cluster(&mut self, n: usize) -> Vec<usize> {
        let agents: Vec<usize> = (0..n)
            .map(|i| self.start(i, AgentSpec::new(&format!("n{}", i + 1), n as u32)))
            .collect();
        self.wait_whole(&agents);
        agents
    }

    /// Waits (bounded) until every agent in `agents`, named n1..nN, lists all of them alive.
    pub fn wait_whole(&self, agents: &[usize]) {
        let names: Vec<String> = (1..=agents.len()).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        self.wait_for(Duration::from_secs(20), "every node lists all alive", |l| {
            l.all_alive(agents, &refs)
        });
    }

    /// Runs `chorus kv ARGS...` against agent `a`, inside its namespace; returns (exit code,
    /// stdout, stderr).
    pub fn kv(&self, a: usize, args: &[&str]) -> (i32, String, String) {
        self.cli(a, "kv", args)
    }

    /// Runs `chorus strong ARGS...` against agent `a`, inside its namespace.
    #[allow(dead_code)] // used by some test targets only
    pub fn strong(&self, a: usize, args: &[&str]) -> (i32, String, String) {
        self.cli(a, "strong", args)
    }

    /// Runs `chorus SUB ARGS...` against agent `a`, inside its namespace; returns (exit code,
    /// stdout, stderr).
    pub fn cli(&self, a: usize, sub: &str, args: &[&str]) -> (i32, String, String) {
        let mut full = vec![CHORUS, sub];
        full.extend_from_slice(args);
        let out = self.exec(self.agents[a].host, &full);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `chorus kv ARGS...` against agent `a` giving a token `(how, value)`: `--token-file`
    /// as a flag, or an environment variable (`CHORUS_TOKEN`, `CHORUS_TOKEN_FILE`).
    #[allow(dead_code)] // used by some test targets only
    pub fn kv_with_token(
        &self,
        a: usize,
        args: &[&str],
        token: Option<(&str, &str)>,
    ) -> (i32, String, String) {
        let mut full: Vec<String> = vec!["env".into()];
        match token {
            Some((var, v)) if var.starts_with("CHORUS_") => full.push(format!("{var}={v}")),
            _ => {}
        }
        full.extend([CHORUS.to_string(), "kv".into()]);
        full.extend(args.iter().map(|s| s.to_string()));
        if let Some(("--token-file", f)) = token {
            full.extend(["--token-file".into(), f.to_string()]);
        }
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = self.exec(self.agents[a].host, &refs);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Restarts a stopped agent with its data directory.
    pub fn restart(&mut self, a: usize) {
        self.restart_with(a, &[]);
    }

    /// Waits (at most `limit`) for agent `a` to exit by itself; its status, or `None` if it
    /// still runs.
    pub fn wait_exit(&mut self, a: usize, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.agents[a].child.as_mut().expect("agent was started");
            if let Some(st) = c.try_wait().expect("wait agent") {
                self.agents[a].child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts a stopped agent with its data directory and extra `chorus agent` arguments.
    pub fn restart_with(&mut self, a: usize, extra: &[&str]) {
        assert!(self.agents[a].child.is_none(), "agent {a} is running");
        let mut agent = std::mem::replace(
            &mut self.agents[a],
            Agent {
                host: 0,
                spec: AgentSpec::new("x", 1),
                data_dir: PathBuf::new(),
                log: PathBuf::new(),
                config: PathBuf::new(),
                child: None,
            },
        );
        self.spawn_with(&mut agent, extra);
        self.agents[a] = agent;
    }

    /// Sends `method path` to agent `a`'s API from inside its namespace (Python's urllib, so the
    /// test needs no HTTP client of its own); returns the status and the JSON body.
    #[allow(dead_code)] // used by some test targets only
    pub fn http(&self, a: usize, method: &str, path: &str) -> (u16, Value) {
        let script = format!(
            "import urllib.request, urllib.error, sys\n\
             req = urllib.request.Request('http://127.0.0.1:7947{path}', method='{method}', data=b'' if '{method}' in ('PUT', 'POST') else None)\n\
             try:\n    r = urllib.request.urlopen(req, timeout=30); print(r.status); print(r.read().decode())\n\
             except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n"
        );
        let out = self.exec(self.agents[a].host, &["python3", "-c", &script]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.splitn(2, '\n');
        let status = lines
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let body = lines
            .next()
            .and_then(|b| serde_json::from_str(b.trim()).ok())
            .unwrap_or(Value::Null);
        (status, body)
    }

    /// `METHOD path` with `body` to agent `a`'s API from inside its namespace (Python's urllib):
    /// (HTTP status, JSON body, or `Null` when the body is not JSON).
    #[allow(dead_code)] // used by some test targets only
    pub fn request(&self, a: usize, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let file = self.dir().join(format!("request-body-{a}"));
        std::fs::write(&file, body).expect("body file");
        let script = format!(
            "import urllib.request, urllib.error\n\
             req = urllib.request.Request('http://127.0.0.1:7947{path}', method='{method}', data=open('{}', 'rb').read())\n\
             try:\n    r = urllib.request.urlopen(req, timeout=30); print(r.status); print(r.read().decode())\n\
             except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n",
            file.display()
        );
        let out = self.exec(self.agents[a].host, &["python3", "-c", &script]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, json) = text.split_once('\n').unwrap_or(("0", ""));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(json.trim()).unwrap_or(Value::Null),
        )
    }

    /// Asks agent `a` for `chorus <what> --json` through the CLI, inside its namespace.
    pub fn query(&self, a: usize, what: &str) -> Option<Value> {
        let out = self.exec(
            self.agents[a].host,
            &[CHORUS, what, "--json", "--api", "127.0.0.1:7947"],
        );
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Agent `a`'s member list as (name, state, generation, id).
    pub fn members(&self, a: usize) -> Option<Vec<(String, String, u64, String)>> {
        let v = self.query(a, "members")?;
        Some(
            v["members"]
                .as_array()?
                .iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["state"].as_str().unwrap_or("").to_string(),
                        m["generation"].as_u64().unwrap_or(0),
                        m["id"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect(),
        )
    }

    /// The state agent `viewer` reports for the member named `name`.
    pub fn state_of(&self, viewer: usize, name: &str) -> Option<String> {
        self.members(viewer)?
            .into_iter()
            .find(|m| m.0 == name)
            .map(|m| m.1)
    }

    /// Agent `a`'s `/v1/status`.
    pub fn status(&self, a: usize) -> Option<Value> {
        self.query(a, "status")
    }

    /// Agent `a`'s `/metrics` text.
    pub fn metrics(&self, a: usize) -> String {
        let script = "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:7947/metrics', timeout=5).read().decode())";
        let out = self.exec(self.agents[a].host, &["python3", "-c", script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of a metric line `name{labels}` in agent `a`'s metrics (0 when absent).
    pub fn metric(&self, a: usize, series: &str) -> u64 {
        self.metrics(a)
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse::<f64>().ok())
            })
            .map_or(0, |v| v as u64)
    }

    /// The last lines of agent `a`'s log.
    pub fn log_of(&self, a: usize) -> String {
        let text = std::fs::read_to_string(&self.agents[a].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "--- log of {} ---\n{}",
            self.agents[a].spec.name,
            lines[start..].join("\n")
        )
    }

    /// Every agent's log tail, for failure messages.
    pub fn all_logs(&self) -> String {
        (0..self.agents.len())
            .map(|a| self.log_of(a))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `cond` every 100 ms until it holds or `limit` passes; returns the time it took.
    /// Panics with `what` and every agent's log on timeout.
    pub fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        mut cond: impl FnMut(&Lab) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if cond(self) {
                return start.elapsed();
            }
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for: {what}\n{}",
                    self.all_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True when every listed running agent lists exactly the `names` as alive.
    pub fn all_alive(&self, viewers: &[usize], names: &[&str]) -> bool {
        viewers.iter().all(|v| {
            self.members(*v).is_some_and(|ms| {
                names
                    .iter()
                    .all(|n| ms.iter().any(|m| m.0 == *n && m.1 == "alive"))
            })
        })
    }

    /// Sends a datagram from host `from` to `to` (ip:port) with python, `count` times.
    pub fn send_udp(&self, from: usize, to: &str, payload_py: &str, count: usize) {
        let (host, port) = to.rsplit_once(':').expect("ip:port");
        let script = format!(
            "import socket,os\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)\n\
             for i in range({count}):\n    s.sendto({payload_py}, ('{host}', {port}))\n"
        );
        let out = self.exec(from, &["python3", "-c", &script]);
        assert!(
            out.status.success(),
            "python sender failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Path of the lab's scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut c) = a.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            // Anything still running in the namespace (a stray CLI) goes too.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// What one host sent on its interface: totals from the interface counters, and by kind
/// (`udp_unicast`, `multicast`, `tcp`, `igmp`, `arp`, `other`) as (packets, bytes on the wire).
#[derive(Debug, Clone, Default)]
pub struct Wire {
    /// Bytes the interface sent (Ethernet frames).
    pub tx_bytes: u64,
    /// Frames the interface sent.
    pub tx_packets: u64,
    /// The same split by kind.
    pub kinds: std::collections::BTreeMap<String, (u64, u64)>,
}

impl Wire {
    /// What was sent between `earlier` and this reading.
    pub fn since(&self, earlier: &Wire) -> Wire {
        Wire {
            tx_bytes: self.tx_bytes - earlier.tx_bytes,
            tx_packets: self.tx_packets - earlier.tx_packets,
            kinds: self
                .kinds
                .iter()
                .map(|(k, (p, b))| {
                    let (p0, b0) = earlier.kinds.get(k).copied().unwrap_or((0, 0));
                    (k.clone(), (p - p0, b - b0))
                })
                .collect(),
        }
    }

    /// The sum of several hosts' readings.
    pub fn add(&mut self, other: &Wire) {
        self.tx_bytes += other.tx_bytes;
        self.tx_packets += other.tx_packets;
        for (k, (p, b)) in &other.kinds {
            let e = self.kinds.entry(k.clone()).or_default();
            e.0 += p;
            e.1 += b;
        }
    }
}

/// A process started in a namespace; killed (SIGTERM, then SIGKILL) and reaped when dropped.
#[allow(dead_code)] // used by some test targets only
pub struct Background(pub std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
