//! Election takeover benchmark against etcd, on the same hosts in the same run (not a test: it
//! measures).
//!
//! `cargo bench -p chorus-agent --bench elections -- [--runs R]`
//!
//! Three hosts in network namespaces on one bridge, each running a `chorus agent` and an etcd
//! 3.4 member (Debian's `etcd-server`). Two candidates (Python, in the namespaces of the first
//! two hosts) campaign in one election through their local agent or member with a 3 s lease: Chorus's
//! `PUT /v1/election/NAME?ttl=3s&lock_delay=0s&wait=60s`, renewed every second; etcd's JSON
//! gateway `/v3/lease/grant` (TTL 3), `/v3/election/campaign`, `/v3/lease/keepalive` every
//! second (also while waiting, or the waiting candidate's lease would run out). Once the first
//! leads and the second waits, the first is killed with SIGKILL; the figure is the time from the
//! kill to the second's campaign returning, on one monotonic clock. Chorus and etcd alternate.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;
use support::{AgentSpec, Lab, monotonic};

const CHORUS_CANDIDATE: &str = r#"
import json, sys, time, urllib.request, urllib.error
name, who, out = sys.argv[1:4]
base = 'http://127.0.0.1:7947'
def call(method, path, body=b''):
    req = urllib.request.Request(base + path, method=method, data=body)
    return json.loads(urllib.request.urlopen(req, timeout=90).read())
while True:
    try:
        v = call('PUT', '/v1/election/%s?candidate=%s&ttl=3s&lock_delay=0s&wait=60s' % (name, who), who.encode())
        break
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise
open(out, 'a').write('%.6f %s\n' % (time.monotonic(), v['fencing_token']))
while True:
    time.sleep(1)
    call('POST', '/v1/election/%s/renew?candidate=%s&token=%s' % (name, who, v['fencing_token']))
"#;

const ETCD_CANDIDATE: &str = r#"
import base64, json, sys, threading, time, urllib.request
name, who, out = sys.argv[1:4]
base = 'http://127.0.0.1:2379'
b64 = lambda s: base64.b64encode(s.encode()).decode()
def call(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode())
    return json.loads(urllib.request.urlopen(req, timeout=90).read().decode().splitlines()[0])
lease = call('/v3/lease/grant', {'TTL': 3})['ID']
def keepalive():
    while True:
        time.sleep(1)
        call('/v3/lease/keepalive', {'ID': lease})
threading.Thread(target=keepalive, daemon=True).start()
v = call('/v3/election/campaign', {'name': b64(name), 'lease': lease, 'value': b64(who)})
open(out, 'a').write('%.6f %s\n' % (time.monotonic(), v['leader']['rev']))
while True:
    time.sleep(60)
"#;

fn runs() -> usize {
    let v: Vec<String> = std::env::args().collect();
    v.iter()
        .position(|a| a == "--runs")
        .and_then(|i| v.get(i + 1))
        .map_or(5, |s| s.parse().expect("--runs takes a number"))
}

/// When the candidate writing `file` was elected (monotonic seconds), if it was.
fn elected(file: &std::path::Path) -> Option<f64> {
    std::fs::read_to_string(file)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One takeover: candidate a leads, b waits, a is killed; seconds from the kill to b leading.
fn takeover(lab: &Lab, script: &str, name: &str) -> f64 {
    let (fa, fb) = (
        lab.dir().join(format!("{name}-a")),
        lab.dir().join(format!("{name}-b")),
    );
    let py = |who: &str, f: &std::path::Path| -> Vec<String> {
        ["python3", "-c", script, name, who, &f.display().to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let a_args = py("a", &fa);
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let mut a = lab.spawn_in(0, &a_refs);
    lab.wait_for(Duration::from_secs(30), "the first candidate leads", |_| {
        elected(&fa).is_some()
    });
    let b_args = py("b", &fb);
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let _b = lab.spawn_in(1, &b_refs);
    // b's campaign is on its way (its interpreter starts in about 50 ms, far within a's 3 s
    // lease, which the kill does not shorten).
    let killed = monotonic();
    let _ = a.0.kill();
    let _ = a.0.wait();
    std::mem::forget(a); // reaped: nothing left for its drop to stop
    let mut took = 0.0;
    lab.wait_for(
        Duration::from_secs(60),
        "the second candidate leads",
        |_| elected(&fb).map(|t| took = t - killed).is_some(),
    );
    took
}

fn main() {
    let runs = runs();
    let mut lab = match Lab::new(3) {
        Ok(l) => l,
        Err(reason) => {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
    if std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: etcd is not installed (Debian package etcd-server)");
        return;
    }
    let agents: Vec<usize> = (0..3)
        .map(|i| lab.start(i, AgentSpec::new(&format!("n{}", i + 1), 3)))
        .collect();
    lab.wait_whole(&agents);
    let cluster: Vec<String> = (0..3)
        .map(|i| format!("e{i}=http://{}:2380", lab.ip(i)))
        .collect();
    let cluster = cluster.join(",");
    let _etcd: Vec<support::Background> = (0..3)
        .map(|i| {
            let ip = lab.ip(i);
            let dir = lab.dir().join(format!("etcd-{i}"));
            let args = [
                "etcd".to_string(),
                format!("--name=e{i}"),
                format!("--data-dir={}", dir.display()),
                format!("--listen-peer-urls=http://{ip}:2380"),
                format!("--initial-advertise-peer-urls=http://{ip}:2380"),
                format!("--listen-client-urls=http://{ip}:2379,http://127.0.0.1:2379"),
                format!("--advertise-client-urls=http://{ip}:2379"),
                format!("--initial-cluster={cluster}"),
                "--initial-cluster-state=new".to_string(),
            ];
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.spawn_in(i, &refs)
        })
        .collect();
    lab.wait_for(Duration::from_secs(30), "etcd has a leader", |l| {
        let out = l.exec(
            0,
            &["etcdctl", "endpoint", "status", "--cluster", "-w", "json"],
        );
        String::from_utf8_lossy(&out.stdout).contains("\"leader\"")
    });
    let (mut chorus, mut etcd) = (Vec::new(), Vec::new());
    for r in 0..runs {
        chorus.push(takeover(&lab, CHORUS_CANDIDATE, &format!("c{r}")));
        etcd.push(takeover(&lab, ETCD_CANDIDATE, &format!("e{r}")));
        println!(
            "run {}: chorus {:.3} s, etcd {:.3} s",
            r + 1,
            chorus[r],
            etcd[r]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mc, me) = (median(&mut chorus), median(&mut etcd));
    println!(
        "kill -9 of the leader to the next candidate leading, 3 s lease, {runs} runs each: \
         chorus median {mc:.3} s ({:.3}-{:.3}), etcd 3.4 median {me:.3} s ({:.3}-{:.3}); ratio chorus/etcd {:.2}",
        chorus[0],
        chorus[runs - 1],
        etcd[0],
        etcd[runs - 1],
        mc / me
    );
}
