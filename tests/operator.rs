//! What broke when Chorus was tried as a new operator would (issue 13), each reproduced on a real
//! agent in a network namespace: the test fails on the behaviour the issue reported.

mod support;

use base64::Engine;
use support::{AgentSpec, CHORUS, Lab};

/// One agent that is its own quorum.
fn single(lab: &mut Lab) -> usize {
    let a = lab.start(0, AgentSpec::new("solo", 1));
    lab.wait_for(
        std::time::Duration::from_secs(20),
        "the agent answers with quorum",
        |l| {
            l.status(a)
                .is_some_and(|s| s["quorum"]["has_quorum"] == true)
        },
    );
    a
}

/// `sh -c SCRIPT` in agent `a`'s namespace: (exit code, stdout, stderr).
fn sh(lab: &Lab, a: usize, script: &str) -> (i32, String, String) {
    let out = lab.exec(lab.agents[a].host, &["sh", "-c", script]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_oversized_value_sent_fast_is_too_large_not_agent_down() {
    let mut lab = lab_or_skip!(1);
    let a = single(&mut lab);
    // Bug 1: 7 of 8 of these failed with "no chorus agent answers ... Broken pipe", exit 1.
    for i in 0..8 {
        let (code, _, err) = sh(
            &lab,
            a,
            &format!("head -c 2000000 /dev/zero | {CHORUS} kv put default big"),
        );
        assert_eq!(code, 6, "try {i}: exit {code}: {err}");
        assert!(
            err.contains("too_large") && err.contains("2000000"),
            "try {i}: {err}"
        );
    }
    // Over HTTP the 413 carries the documented size and max.
    let (code, v) = lab.request(a, "PUT", "/v1/kv/default/big", &vec![0u8; 2_000_000]);
    assert_eq!(code, 413, "{v}");
    assert_eq!(v["error"]["code"], "too_large", "{v}");
    assert_eq!(v["error"]["size"], 2_000_000, "{v}");
    assert_eq!(v["error"]["max"], 1_048_576, "{v}");
    let (code, _, _) = lab.kv(a, &["get", "default", "big"]);
    assert_eq!(code, 3, "nothing was written");
}

#[test]
fn binary_values_survive_json_and_the_cli_prints_what_scripts_need() {
    let mut lab = lab_or_skip!(1);
    let a = single(&mut lab);
    // Bug 2: --json turned 16 random bytes into 7 U+FFFD; the value is base64 now.
    let bytes: Vec<u8> = (0u8..16)
        .map(|i| i.wrapping_mul(37).wrapping_add(0x80))
        .collect();
    let file = lab.dir().join("binary");
    std::fs::write(&file, &bytes).expect("write");
    let (code, out, err) = sh(
        &lab,
        a,
        &format!("{CHORUS} kv put default bin < {}", file.display()),
    );
    assert_eq!(code, 0, "{err}");
    // Bug 6: kv put printed nothing; it prints the new version (and nothing with -q).
    let version = out.trim().to_string();
    assert!(!version.is_empty(), "kv put printed no version");
    let (code, out, _) = lab.kv(a, &["get", "--json", "default", "bin"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    let back = base64::engine::general_purpose::STANDARD
        .decode(v["value"].as_str().expect("value"))
        .expect("base64");
    assert_eq!(back, bytes, "{v}");
    assert_eq!(v["version"], version.as_str(), "{v}");
    let (code, out, _) = lab.kv(a, &["put", "-q", "default", "k", "v"]);
    assert_eq!((code, out.as_str()), (0, ""), "-q prints nothing");
    // Bug 5: a URL for --api, as Consul and etcd users type it.
    let (code, out, err) = lab.kv(
        a,
        &["get", "--api", "http://127.0.0.1:7947/", "default", "k"],
    );
    assert_eq!((code, out.as_str()), (0, "v"), "{err}");
    // Bug 5: --ttl -5s was taken for a flag; now the agent says what is wrong with it.
    let (code, _, err) = lab.kv(a, &["put", "default", "t", "v", "--ttl", "-5s"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("ttl"), "{err}");
}

#[test]
fn every_http_error_is_json_with_a_code() {
    let mut lab = lab_or_skip!(1);
    let a = single(&mut lab);
    // Bug 5: 405 had an empty body.
    let (code, v) = lab.request(a, "POST", "/v1/status", b"");
    assert_eq!(code, 405, "{v}");
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
    // Bug 5: an empty key answered "no such endpoint".
    let (code, v) = lab.request(a, "GET", "/v1/kv/default/", b"");
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("empty"),
        "{v}"
    );
}

#[test]
fn status_check_exits_4_without_quorum() {
    let mut lab = lab_or_skip!(1);
    // One agent of three: no quorum.
    let a = lab.start(0, AgentSpec::new("alone", 3));
    lab.wait_for(
        std::time::Duration::from_secs(20),
        "the agent answers",
        |l| l.status(a).is_some(),
    );
    let (code, _, err) = lab.cli(a, "status", &["--check"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no quorum"), "{err}");
    let (code, _, _) = lab.cli(a, "status", &[]);
    assert_eq!(code, 0, "plain status still exits 0");
}

#[test]
fn status_check_exits_0_with_quorum() {
    let mut lab = lab_or_skip!(1);
    let a = single(&mut lab);
    let (code, _, err) = lab.cli(a, "status", &["--check"]);
    assert_eq!(code, 0, "{err}");
}

/// Reads `/metrics` the classic way and the OpenMetrics way with the Python Prometheus client's
/// own parsers (Debian's python3-prometheus-client, for the system Python).
const PARSE_METRICS: &str = r#"
import urllib.request
from prometheus_client.parser import text_string_to_metric_families as classic
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
def get(accept):
    req = urllib.request.Request('http://127.0.0.1:7947/metrics', headers={'Accept': accept} if accept else {})
    r = urllib.request.urlopen(req, timeout=10)
    return r.headers['Content-Type'], r.read().decode()
ct, body = get(None)
assert ct.startswith('text/plain; version=0.0.4'), ct
fams = list(classic(body))
empty = [f.name for f in fams if not f.samples]
untyped = [f.name for f in fams if f.type == 'unknown']
assert not empty and not untyped, ('classic', empty, untyped)
counters = [f.name for f in fams if f.type == 'counter']
assert len(counters) >= 5, counters
byname = {f.name: f for f in fams}
for want in ['chorus_store_frames_sent', 'chorus_store_frames_received',
             'chorus_build_info', 'chorus_catching_up', 'chorus_store_entries']:
    assert want in byname, (want, sorted(byname))
h = byname['chorus_api_request_duration_seconds']
assert h.type == 'histogram', h.type
puts = [x for x in h.samples if x.name.endswith('_count') and x.labels.get('route') == '/v1/kv/{store}/{*key}'
        and x.labels.get('method') == 'PUT' and x.labels.get('status') == '200']
assert puts and puts[0].value >= 1, h.samples[:5]
assert byname['chorus_store_entries'].samples[0].labels == {'store': 'default'}
assert byname['chorus_storage_failed'].samples[0].value == 0
assert byname['chorus_process_resident_memory_bytes'].samples[0].value > 1e6
assert byname['chorus_process_open_fds'].samples[0].value > 3
assert byname['chorus_process_start_time_seconds'].samples[0].value > 1.7e9
writes = [x for x in byname['chorus_store_request_seconds'].samples if x.name.endswith('_count')
          and x.labels == {'op': 'write', 'outcome': 'ok'}]
assert writes and writes[0].value >= 1, byname['chorus_store_request_seconds'].samples[-3:]
for h in ['chorus_log_write_seconds', 'chorus_log_fsync_seconds']:
    counts = [x.value for x in byname[h].samples if x.name.endswith('_count')]
    assert counts and counts[0] >= 1, (h, byname[h].samples[-3:])
ct, body = get('application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5')
assert ct.startswith('application/openmetrics-text'), ct
fams = list(om(body))
assert all(f.samples for f in fams), [f.name for f in fams if not f.samples]
print(len(counters), len(fams))
"#;

#[test]
fn metrics_parse_with_a_real_prometheus_parser_in_both_formats() {
    let have = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        let reason = "the system Python has no prometheus_client (python3-prometheus-client)";
        assert!(std::env::var("CHORUS_E2E_REQUIRE").is_err(), "{reason}");
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let mut lab = lab_or_skip!(1);
    let a = single(&mut lab);
    assert_eq!(lab.kv(a, &["put", "default", "k", "v"]).0, 0);
    let out = lab.exec(
        lab.agents[a].host,
        &["/usr/bin/python3", "-c", PARSE_METRICS],
    );
    assert!(
        out.status.success(),
        "bug 3: /metrics did not parse: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sighup_applies_log_level_and_names_the_changes_that_need_a_restart() {
    let mut lab = lab_or_skip!(1);
    let a = single(&mut lab);
    let reloads = |l: &Lab| {
        l.log_of(a)
            .matches("SIGHUP: configuration reloaded")
            .count()
    };
    // Membership debug lines off...
    lab.edit_config(a, "level = \"info,membership=debug\"", "level = \"info\"");
    lab.sighup(a);
    lab.wait_for(
        std::time::Duration::from_secs(10),
        "the first reload",
        |l| reloads(l) == 1,
    );
    // ...and on again: they must reappear after the second reload, and not between the two.
    lab.edit_config(a, "level = \"info\"", "level = \"info,membership=debug\"");
    lab.sighup(a);
    lab.wait_for(
        std::time::Duration::from_secs(10),
        "membership debug lines after the second reload",
        |l| {
            let log = l.log_of(a);
            let second = log
                .rfind("SIGHUP: configuration reloaded")
                .unwrap_or(log.len());
            reloads(l) == 2 && log[second..].contains(" DEBUG membership")
        },
    );
    let log = lab.log_of(a);
    let first = log.find("SIGHUP: configuration reloaded").expect("first");
    let second = log.rfind("SIGHUP: configuration reloaded").expect("second");
    let between = &log[first..second];
    assert!(
        !between.contains(" DEBUG "),
        "debug lines while log.level was info:\n{between}"
    );
    assert!(
        log[first..].contains("log.level"),
        "the reload names log.level"
    );
    // A change that needs a restart is named, at WARN.
    lab.append_config(a, "[store]\nround_timeout = \"3s\"\n");
    lab.sighup(a);
    lab.wait_for(
        std::time::Duration::from_secs(10),
        "the third reload",
        |l| reloads(l) == 3,
    );
    let log = lab.log_of(a);
    let line = log
        .lines()
        .rfind(|l| l.contains("SIGHUP: configuration reloaded"))
        .expect("line");
    assert!(
        line.contains("WARN") && line.contains("store.round_timeout") && line.contains("restart"),
        "{line}"
    );
}

#[test]
fn a_wrong_cluster_key_is_a_warning_naming_the_source_within_5_s() {
    let mut lab = lab_or_skip!(2);
    let a = lab.start(0, AgentSpec::new("a", 2));
    let mut spec = AgentSpec::new("b", 2);
    spec.key = support::KEY_B.into();
    let b = lab.start(1, spec);
    let start = std::time::Instant::now();
    for (me, other) in [(a, b), (b, a)] {
        let from = lab.ip(lab.agents[other].host).to_string();
        lab.wait_for(
            std::time::Duration::from_secs(5).saturating_sub(start.elapsed()),
            "a WARN naming the other node's address and the key",
            |l| {
                l.log_of(me).lines().any(|line| {
                    line.contains("WARN") && line.contains(&from) && line.contains("cluster.key")
                })
            },
        );
    }
    // Rate-limited: one warning per source a minute, not one per datagram.
    let warnings = lab
        .log_of(a)
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cluster.key"))
        .count();
    assert_eq!(warnings, 1, "{}", lab.log_of(a));
}

#[test]
fn two_members_with_one_name_are_warned_about_on_both() {
    let mut lab = lab_or_skip!(2);
    let a = lab.start(0, AgentSpec::new("twin", 2));
    let b = lab.start(1, AgentSpec::new("other", 2));
    lab.wait_for(std::time::Duration::from_secs(20), "both see both", |l| {
        l.all_alive(&[a, b], &["twin", "other"])
    });
    // b comes back with a copy of a's name (the usual cause: a copied configuration).
    lab.terminate(b);
    lab.edit_config(b, "name = \"other\"", "name = \"twin\"");
    lab.restart(b);
    for x in [a, b] {
        lab.wait_for(
            std::time::Duration::from_secs(20),
            "a WARN about the shared name",
            |l| {
                l.log_of(x)
                    .lines()
                    .any(|line| line.contains("WARN") && line.contains("share the name \"twin\""))
            },
        );
    }
}

#[test]
fn a_dead_node_is_replaced_by_one_that_joins_without_a_vote_and_gets_it_once_current() {
    // docs/operations.md, "Replacing a dead node", step by step.
    let mut lab = lab_or_skip!(4);
    let agents: Vec<usize> = (0..3)
        .map(|i| lab.start(i, AgentSpec::new(&format!("n{}", i + 1), 3)))
        .collect();
    lab.wait_whole(&agents);
    let (n1, n2, n3) = (agents[0], agents[1], agents[2]);
    let (code, _, err) = sh(
        &lab,
        n1,
        &format!("for i in $(seq 1 200); do {CHORUS} kv put -q default k$i v$i || exit 1; done"),
    );
    assert_eq!(code, 0, "{err}");
    lab.kill9(n3); // gone for good
    let mut spec = AgentSpec::new("n4", 3);
    spec.votes = Some(0);
    let n4 = lab.start(3, spec);
    let digest = |l: &Lab, a: usize| {
        l.status(a)
            .map(|s| s["stores"]["default"]["digest"].clone())
    };
    lab.wait_for(
        std::time::Duration::from_secs(30),
        "the replacement is current",
        |l| {
            l.status(n4).is_some_and(|s| s["catching_up"] == false)
                && digest(l, n4).is_some()
                && digest(l, n4) == digest(l, n1)
        },
    );
    // Its vote, then a quorum of the two nodes left that counts it.
    lab.terminate(n4);
    lab.edit_config(n4, "votes = 0", "votes = 1");
    lab.restart(n4);
    lab.wait_for(std::time::Duration::from_secs(30), "n4 votes", |l| {
        l.status(n4)
            .is_some_and(|s| s["node"]["votes"] == 1 && s["catching_up"] == false)
    });
    lab.kill9(n2);
    lab.wait_for(
        std::time::Duration::from_secs(30),
        "n1 and n4 hold a quorum",
        |l| {
            l.status(n4)
                .is_some_and(|s| s["quorum"]["has_quorum"] == true)
        },
    );
    let (code, out, err) = sh(
        &lab,
        n4,
        &format!(
            "n=0; for i in $(seq 1 200); do [ \"$({CHORUS} kv get default k$i)\" = v$i ] && n=$((n+1)); done; echo $n"
        ),
    );
    assert_eq!((code, out.trim()), (0, "200"), "{err}");
    assert_eq!(lab.kv(n4, &["put", "default", "after", "v"]).0, 0);
}

#[test]
fn chorus_join_merges_two_agents_that_know_nothing_of_each_other() {
    let mut lab = lab_or_skip!(2);
    let mut specs = [AgentSpec::new("a", 2), AgentSpec::new("b", 2)];
    for s in &mut specs {
        s.multicast = false; // no discovery, no seeds: each alone
    }
    let [sa, sb] = specs;
    let a = lab.start(0, sa);
    let b = lab.start(1, sb);
    lab.wait_for(std::time::Duration::from_secs(20), "both answer", |l| {
        l.status(a).is_some() && l.status(b).is_some()
    });
    assert_eq!(
        lab.status(a).expect("a")["members"]["alive"],
        1,
        "a is alone"
    );
    let target = format!("{}:7946", lab.ip(lab.agents[b].host));
    let (code, out, err) = lab.cli(a, "join", &[&target]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("joined: b"), "{out}");
    lab.wait_for(std::time::Duration::from_secs(10), "each lists both", |l| {
        l.all_alive(&[a, b], &["a", "b"])
    });
    // A bad address is a clear error.
    let (code, _, err) = lab.cli(a, "join", &["nowhere"]);
    assert_ne!(code, 0);
    assert!(err.contains("HOST:PORT"), "{err}");
}

#[test]
fn a_seed_that_never_answers_and_multicast_that_hears_nobody_are_warnings_after_a_minute() {
    let mut lab = lab_or_skip!(1);
    let mut spec = AgentSpec::new("lonely", 2);
    spec.seeds = vec!["10.77.0.250:7946".into()]; // no host there
    let a = lab.start(0, spec);
    for what in [
        "seed has not answered for a minute",
        "multicast discovery heard no other node",
    ] {
        lab.wait_for(std::time::Duration::from_secs(80), what, |l| {
            l.log_of(a)
                .lines()
                .any(|line| line.contains("WARN") && line.contains(what))
        });
    }
    let log = lab.log_of(a);
    let seed_line = log
        .lines()
        .find(|l| l.contains("seed has not answered"))
        .expect("line");
    assert!(seed_line.contains("10.77.0.250:7946"), "{seed_line}");
    assert_eq!(
        log.matches("seed has not answered").count(),
        1,
        "warned once, not at every retry"
    );
}

#[test]
fn members_that_count_quorum_differently_are_warned_about_on_both_and_shown_in_status() {
    let mut lab = lab_or_skip!(2);
    let a = lab.start(0, AgentSpec::new("a", 2)); // 2 of 2
    let b = lab.start(1, AgentSpec::new("b", 3)); // 2 of 3: configured for another cluster size
    for (x, theirs) in [(a, "2/3"), (b, "2/2")] {
        lab.wait_for(
            std::time::Duration::from_secs(20),
            "a WARN naming the other's rule",
            |l| {
                l.log_of(x).lines().any(|line| {
                    line.contains("WARN")
                        && line.contains("counts quorum differently")
                        && line.contains(theirs)
                })
            },
        );
    }
    let (code, out, _) = lab.cli(a, "status", &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("count quorum differently") && out.contains("b (2/3)"),
        "{out}"
    );
    let s = lab.status(b).expect("status");
    assert_eq!(s["quorum"]["disagreeing_members"]["a"], "2/2", "{s}");
}

#[test]
fn force_leave_reports_a_dead_member_left_everywhere_and_refuses_a_live_one() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    let (n1, n2, n3) = (agents[0], agents[1], agents[2]);
    // A live member cannot be forced out.
    let (code, _, err) = lab.cli(n1, "force-leave", &["n2"]);
    assert_ne!(code, 0, "n2 is alive");
    assert!(err.contains("not failed"), "{err}");
    let (code, _, err) = lab.cli(n1, "force-leave", &["nobody"]);
    assert_eq!(code, 3, "{err}");
    lab.kill9(n3);
    lab.wait_for(std::time::Duration::from_secs(20), "n3 failed on n1", |l| {
        l.state_of(n1, "n3").as_deref() == Some("failed")
    });
    let (code, out, err) = lab.cli(n1, "force-leave", &["n3"]);
    assert_eq!(code, 0, "{out}{err}");
    lab.wait_for(
        std::time::Duration::from_secs(10),
        "every survivor reports n3 left",
        |l| {
            [n1, n2]
                .iter()
                .all(|a| l.state_of(*a, "n3").as_deref() == Some("left"))
        },
    );
    let s = lab.status(n2).expect("status");
    assert!(
        !s["unreachable"].to_string().contains("n3"),
        "a member that left is not unreachable: {s}"
    );
    // If it comes back after all, it is a member again.
    lab.restart(n3);
    lab.wait_for(
        std::time::Duration::from_secs(20),
        "n3 back, alive everywhere",
        |l| l.all_alive(&[n1, n2, n3], &["n1", "n2", "n3"]),
    );
}
