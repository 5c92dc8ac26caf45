//! What security costs (issue 14), on real agents on loopback (not a test: it measures).
//!
//! `cargo bench -p chorus-agent --bench security -- [--runs R] [--secs S] [--clients C]
//! [--idle-secs I] [--old-bin PATH]`
//!
//! 1. Idle datagrams: 5 agents left idle for I seconds; UDP payload bytes and datagrams each node
//!    sent, by channel, from their metrics, so bytes per datagram. With `--old-bin`, the same for
//!    that binary (an earlier build) right after, and the ratio.
//! 2. API tokens: 3 agents with `[[api.tokens]]` and 3 without, each measured R times,
//!    alternating, by `chorus bench` in its own process (quorum puts, C clients, S seconds): the
//!    medians and their ratio.
//! 3. The token check alone: nanoseconds per check of a valid write token, in this process.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHORUS: &str = env!("CARGO_BIN_EXE_chorus");
const TOKEN: &str = "bench-write-token-0123456789abcdef";

struct Args {
    runs: usize,
    secs: u64,
    clients: usize,
    idle_secs: u64,
    old_bin: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        runs: 5,
        secs: 8,
        clients: 32,
        idle_secs: 20,
        old_bin: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = || v.get(i + 1).cloned().expect("a value after the flag");
        match v[i].as_str() {
            "--runs" => a.runs = val().parse().expect("--runs N"),
            "--secs" => a.secs = val().parse().expect("--secs S"),
            "--clients" => a.clients = val().parse().expect("--clients C"),
            "--idle-secs" => a.idle_secs = val().parse().expect("--idle-secs I"),
            "--old-bin" => a.old_bin = Some(val()),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// Agents on loopback, killed when dropped.
struct Agents {
    children: Vec<Child>,
    apis: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn get(api: &str, path: &str, token: bool) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut req = agent.get(format!("http://{api}{path}"));
    if token {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    req.call().ok()?.body_mut().read_to_string().ok()
}

fn start(bin: &str, n: usize, base: u16, tokens: bool) -> Agents {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut children = Vec::new();
    let mut apis = Vec::new();
    for i in 0..n {
        let cfg = dir.path().join(format!("n{i}.toml"));
        let mut text = String::new();
        if tokens {
            text.push_str(&format!(
                "[[api.tokens]]\nrole = \"write\"\nfile = {:?}\n",
                token_file.display().to_string()
            ));
        }
        std::fs::write(&cfg, text).unwrap();
        let api = format!("127.0.0.1:{}", base + 100 + i as u16);
        let child = Command::new(bin)
            .args(["agent", "--config"])
            .arg(&cfg)
            .args(["--name", &format!("n{i}"), "--bind"])
            .arg(format!("127.0.0.1:{}", base + i as u16))
            .args(["--api", &api, "--seed"])
            .arg(format!("127.0.0.1:{base}"))
            .args(["--expected-nodes", &n.to_string(), "--data-dir"])
            .arg(dir.path().join(format!("d{i}")))
            .env("CHORUS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn agent");
        children.push(child);
        apis.push(api);
    }
    let agents = Agents {
        children,
        apis,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = agents.apis.iter().all(|a| {
            get(a, "/v1/status", tokens)
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| {
                    v["members"]["alive"].as_u64() == Some(n as u64)
                        && v["quorum"]["has_quorum"] == true
                })
        });
        if ready {
            return agents;
        }
        assert!(Instant::now() < deadline, "{n} agents did not form in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sum over `series{channel=...}` lines of the agent's metrics.
fn counters(api: &str, series: &str) -> Vec<(String, f64)> {
    get(api, "/metrics", false)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(series)?.strip_prefix("{channel=\"")?;
            let (ch, v) = rest.split_once("\"}")?;
            Some((ch.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn idle(bin: &str, label: &str, secs: u64, base: u16) -> f64 {
    let agents = start(bin, 5, base, false);
    // Let joins and their metadata settle before counting.
    std::thread::sleep(Duration::from_secs(5));
    let take = || -> (f64, f64) {
        let mut b = 0.0;
        let mut p = 0.0;
        for a in &agents.apis {
            b += counters(a, "chorus_bytes_sent_total")
                .iter()
                .map(|x| x.1)
                .sum::<f64>();
            p += counters(a, "chorus_packets_sent_total")
                .iter()
                .map(|x| x.1)
                .sum::<f64>();
        }
        (b, p)
    };
    let (b0, p0) = take();
    std::thread::sleep(Duration::from_secs(secs));
    let (b1, p1) = take();
    let per_node_s = (b1 - b0) / 5.0 / secs as f64;
    let per_dgram = (b1 - b0) / (p1 - p0).max(1.0);
    let dgrams = (p1 - p0) / 5.0 / secs as f64;
    println!(
        "idle, 5 nodes, {secs} s [{label}]: {per_node_s:.0} B/s of UDP payload per node in {dgrams:.2} datagrams/s, {per_dgram:.1} B per datagram"
    );
    per_dgram
}

fn bench_run(apis: &[String], clients: usize, secs: u64, token: bool) -> f64 {
    let mut c = Command::new(CHORUS);
    c.arg("bench");
    for a in apis {
        c.args(["--api", a]);
    }
    c.args([
        "--clients",
        &clients.to_string(),
        "--duration",
        &format!("{secs}s"),
        "--op",
        "put",
    ]);
    c.env_remove("CHORUS_TOKEN").env_remove("CHORUS_TOKEN_FILE");
    if token {
        c.env("CHORUS_TOKEN", TOKEN);
    }
    let out = c.stderr(Stdio::null()).output().expect("chorus bench");
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .split(": ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no rate in {text:?}"));
    assert!(
        text.contains(" 0 errors") || !text.contains("error"),
        "the load generator saw errors: {text}"
    );
    println!(
        "  tokens {}: {}",
        if token { "on " } else { "off" },
        text.trim()
    );
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let base = 21000 + (std::process::id() % 500) as u16 * 10;

    let now = idle(CHORUS, "this build", a.idle_secs, base);
    if let Some(old) = &a.old_bin {
        let before = idle(old, "old build", a.idle_secs, base + 5000);
        println!(
            "bytes per idle datagram: this build / old build = {:.3}",
            now / before
        );
    }

    let off = start(CHORUS, 3, base + 200, false);
    let on = start(CHORUS, 3, base + 400, true);
    let (mut r_off, mut r_on) = (Vec::new(), Vec::new());
    println!(
        "quorum puts, 3 agents, {} clients, {} s per run, {} runs each, alternating:",
        a.clients, a.secs, a.runs
    );
    for _ in 0..a.runs {
        r_off.push(bench_run(&off.apis, a.clients, a.secs, false));
        r_on.push(bench_run(&on.apis, a.clients, a.secs, true));
    }
    let (m_off, m_on) = (median(r_off.clone()), median(r_on.clone()));
    println!(
        "median: tokens off {m_off:.0}/s, tokens on {m_on:.0}/s, on/off = {:.3} (runs off {:?}, on {:?})",
        m_on / m_off,
        r_off.iter().map(|x| *x as u64).collect::<Vec<_>>(),
        r_on.iter().map(|x| *x as u64).collect::<Vec<_>>()
    );

    let tokens = agent::auth::Tokens::new(vec![
        agent::auth::Token {
            role: agent::auth::Role::Read,
            secret: agent::auth::Secret(b"bench-read-token-0123456789abcdef".to_vec()),
            source: "r".into(),
        },
        agent::auth::Token {
            role: agent::auth::Role::Write,
            secret: agent::auth::Secret(TOKEN.as_bytes().to_vec()),
            source: "w".into(),
        },
    ]);
    let header = format!("Bearer {TOKEN}");
    let n = 1_000_000u32;
    let t = Instant::now();
    for _ in 0..n {
        let r = tokens.check(
            &axum::http::Method::PUT,
            std::hint::black_box("/v1/kv/default/key"),
            Some(std::hint::black_box(header.as_bytes())),
        );
        assert!(r.is_ok());
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    println!(
        "token check: {ns:.0} ns per request (2 tokens configured); {:.4} % of a quorum put's {:.2} ms at the median rate above",
        ns / (1e9 * a.clients as f64 / m_on) * 100.0,
        1e3 * a.clients as f64 / m_on
    );
}
