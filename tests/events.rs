//! End-to-end tests of the event stream: real agents in network namespaces.

mod support;

use std::time::Duration;
use support::Lab;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Reads agent `a`'s event stream as Server-Sent Events with `Last-Event-ID: after` until the
/// event `until` arrives (at most 20 s); returns every (id, type) read, in order.
fn sse_until(lab: &Lab, a: usize, after: u64, until: u64) -> Vec<(u64, String)> {
    let script = format!(
        "import urllib.request, sys, time\n\
         req = urllib.request.Request('http://127.0.0.1:7947/v1/events', headers={{'Last-Event-ID': '{after}'}})\n\
         r = urllib.request.urlopen(req, timeout=20)\n\
         ev = None\n\
         end = time.time() + 20\n\
         while time.time() < end:\n\
         \x20   line = r.readline().decode().rstrip('\\n')\n\
         \x20   if line.startswith('event:'): ev = line[6:].strip()\n\
         \x20   elif line.startswith('id:'):\n\
         \x20       i = int(line[3:].strip()); print(i, ev); sys.stdout.flush()\n\
         \x20       if i >= {until}: break\n"
    );
    let out = lab.exec(lab.agents[a].host, &["python3", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (i, t) = l.split_once(' ')?;
            Some((i.parse().ok()?, t.to_string()))
        })
        .collect()
}

fn since(lab: &Lab, a: usize, seq: u64) -> (Vec<(u64, String)>, u64) {
    let (code, v) = lab.http(a, "GET", &format!("/v1/events?since={seq}"));
    assert_eq!(code, 200, "{v}");
    let events = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap_or(0),
                e["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (events, v["last_seq"].as_u64().unwrap_or(0))
}

#[test]
fn a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed() {
    let mut lab = lab_or_skip!(3);
    let _agents = lab.start_cluster(3);
    let (_, before) = since(&lab, 0, 0);
    // While the client is away: writes through another node reach this one as key changes.
    for i in 0..5 {
        let (code, _, err) = lab.kv(1, &["put", "default", &format!("k{i}"), "v"]);
        assert_eq!(code, 0, "{err}");
    }
    let mut missed = Vec::new();
    lab.wait_for(SECS(10), "the writes reach agent n1 as key changes", |l| {
        missed = since(l, 0, before).0;
        missed.iter().filter(|(_, t)| t == "key_changed").count() >= 5
    });
    let last = missed.last().expect("events").0;
    let expected: Vec<u64> = (before + 1..=last).collect();
    let seqs: Vec<u64> = missed.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs, expected,
        "?since gives every event after it, in order"
    );
    let got = sse_until(&lab, 0, before, last);
    assert_eq!(
        got, missed,
        "Last-Event-ID gives exactly the missed events, once each"
    );
}

#[test]
fn every_surviving_node_reports_a_kill_9_as_member_failed_once() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    let marks: Vec<u64> = (0..2).map(|a| since(&lab, a, 0).1).collect();
    lab.kill9(agents[2]);
    lab.wait_for(SECS(15), "both survivors report n3 failed", |l| {
        (0..2).all(|a| {
            since(l, a, marks[a])
                .0
                .iter()
                .any(|(_, t)| t == "member_failed")
        })
    });
    for (a, mark) in marks.iter().enumerate() {
        let failed: Vec<(u64, String)> = since(&lab, a, *mark)
            .0
            .into_iter()
            .filter(|(_, t)| t == "member_failed")
            .collect();
        assert_eq!(failed.len(), 1, "agent {a}: {failed:?}");
    }
    let (code, e) = lab.http(0, "GET", "/v1/events?type=member_failed,nope");
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{e}"
    );
    let (code, e) = lab.http(0, "GET", "/v1/events?since=x");
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{e}"
    );
}

#[test]
fn handlers_page_on_a_kill_9_with_the_right_environment_and_never_block_the_node() {
    let mut lab = lab_or_skip!(3);
    let dir = lab.dir().to_path_buf();
    let agents: Vec<usize> = (0..3)
        .map(|i| {
            let name = format!("n{}", i + 1);
            let out = dir.join(format!("{name}.pages"));
            let mut spec = support::AgentSpec::new(&name, 3);
            spec.extra_toml = format!(
                "[[handlers]]\n\
                 events = [\"member_failed\"]\n\
                 command = [\"sh\", \"-c\", \"echo \\\"$CHORUS_EVENT $CHORUS_MEMBER_NAME $CHORUS_NODE_NAME $(cat)\\\" >> {out}\"]\n\
                 [[handlers]]\n\
                 events = [\"member_failed\"]\n\
                 command = [\"sleep\", \"100\"]\n\
                 timeout = \"1s\"\n\
                 [[handlers]]\n\
                 events = [\"*\"]\n\
                 command = [\"/nonexistent/pager\"]\n",
                out = out.display()
            );
            lab.start(i, spec)
        })
        .collect();
    lab.wait_whole(&agents);
    let t = std::time::Instant::now();
    lab.kill9(agents[2]);
    let pages =
        |name: &str| std::fs::read_to_string(dir.join(format!("{name}.pages"))).unwrap_or_default();
    lab.wait_for(SECS(15), "both survivors page about n3", |_| {
        !pages("n1").is_empty() && !pages("n2").is_empty()
    });
    eprintln!("paged {:?} after kill -9", t.elapsed());
    for name in ["n1", "n2"] {
        let p = pages(name);
        assert!(
            p.starts_with(&format!("member_failed n3 {name} {{"))
                && p.contains("\"type\":\"member_failed\""),
            "{name} paged: {p}"
        );
        assert_eq!(p.lines().count(), 1, "{name} paged once: {p}");
    }
    lab.wait_for(
        SECS(10),
        "the hanging handler is killed at its timeout",
        |l| {
            l.log_of(0)
                .contains("event handler timed out and was killed")
        },
    );
    let log = lab.log_of(0);
    assert!(
        log.contains("cannot start event handler") && log.contains("/nonexistent/pager"),
        "a missing handler command is logged with the reason"
    );
    // The runs are counted by outcome, and every event by type.
    assert!(
        lab.metric(0, "chorus_handler_runs_total{outcome=\"ok\"}") >= 1,
        "{}",
        lab.metrics(0)
    );
    assert!(lab.metric(0, "chorus_handler_runs_total{outcome=\"timeout\"}") >= 1);
    assert!(lab.metric(0, "chorus_handler_runs_total{outcome=\"not_started\"}") >= 1);
    assert_eq!(
        lab.metric(0, "chorus_events_total{type=\"member_failed\"}"),
        1
    );
    // Membership was unaffected by the handlers: the survivors still see each other.
    assert!(lab.all_alive(&[0, 1], &["n1", "n2"]), "{}", lab.all_logs());
}

#[test]
fn an_unknown_event_type_in_a_handler_is_refused_at_start_naming_the_key() {
    let lab = lab_or_skip!(1);
    let cfg = lab.dir().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[handlers]]\nevents = [\"member_exploded\"]\ncommand = [\"true\"]\n",
    )
    .expect("write config");
    let cfg_s = cfg.to_string_lossy().into_owned();
    let out = lab.exec(
        0,
        &[support::CHORUS, "agent", "--config", &cfg_s, "--check"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("handlers[0].events") && err.contains("member_exploded"),
        "{err}"
    );
}

/// Starts a blocking read of `default/key` on agent `a` with `index` and `wait`, from inside its
/// namespace; the script writes `started` when its request is out and then
/// `<status> <ns since epoch at the answer> <Chorus-Version>` to `out`.
fn blocking_read(
    lab: &Lab,
    a: usize,
    index: &str,
    wait: &str,
    out: &std::path::Path,
) -> support::Background {
    let out = out.display();
    let script = format!(
        "import urllib.request, urllib.error, time, threading\n\
         open('{out}.started', 'w').close()\n\
         req = urllib.request.Request('http://127.0.0.1:7947/v1/kv/default/key?index={index}&wait={wait}')\n\
         try:\n\
         \x20   r = urllib.request.urlopen(req, timeout=60); st = r.status; ver = r.headers.get('Chorus-Version')\n\
         except urllib.error.HTTPError as e:\n\
         \x20   st = e.code; ver = ''\n\
         open('{out}', 'w').write('%d %d %s' % (st, time.time_ns(), ver))\n"
    );
    lab.spawn_in(a, &["python3", "-c", &script])
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

#[test]
fn a_blocking_read_returns_soon_after_a_write_elsewhere_and_at_wait_otherwise() {
    let mut lab = lab_or_skip!(3);
    let _agents = lab.start_cluster(3);
    let (code, out, err) = lab.kv(0, &["put", "--json", "default", "key", "v1"]);
    assert_eq!(code, 0, "{err}");
    let v1: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let v1 = v1["version"].as_str().expect("version").to_string();
    let dir = lab.dir().to_path_buf();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();

    // Nothing changes: it answers at `wait` (1 s, plus at most 1/16 of jitter).
    let t = std::time::Instant::now();
    let _quiet = blocking_read(&lab, 0, &v1, "1s", &dir.join("quiet"));
    lab.wait_for(SECS(10), "the quiet blocking read answers", |_| {
        !read("quiet").is_empty()
    });
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "answered after {took:?}, before its wait"
    );
    assert!(read("quiet").starts_with("200 "), "{}", read("quiet"));

    // A write on another node wakes it.
    let _woken = blocking_read(&lab, 0, &v1, "30s", &dir.join("woken"));
    lab.wait_for(SECS(10), "the blocking read is out", |_| {
        dir.join("woken.started").exists()
    });
    // Its request is out, but may not have reached the agent yet: a write that comes first is
    // seen by its first read, which answers at once too.
    let put_at = now_ns();
    let (code, _, err) = lab.kv(2, &["put", "default", "key", "v2"]);
    assert_eq!(code, 0, "{err}");
    lab.wait_for(SECS(10), "the woken blocking read answers", |_| {
        !read("woken").is_empty()
    });
    let answer = read("woken");
    let mut parts = answer.split(' ');
    assert_eq!(parts.next(), Some("200"), "{answer}");
    let at: u128 = parts.next().and_then(|p| p.parse().ok()).expect("time");
    let version = parts.next().unwrap_or("");
    assert_ne!(version, v1, "it returned the new version: {answer}");
    let after_ms = (at.saturating_sub(put_at)) as f64 / 1e6;
    eprintln!("blocking read answered {after_ms:.1} ms after the write began");
    assert!(after_ms < 100.0, "answered {after_ms} ms after the write");

    for bad in ["wait=-5s", "wait=1h", "index=abc&wait=1s"] {
        let path = if bad.starts_with("index") {
            format!("/v1/kv/default/key?{bad}")
        } else {
            format!("/v1/kv/default/key?index={v1}&{bad}")
        };
        let (code, e) = lab.http(0, "GET", &path);
        assert_eq!(
            (code, e["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_prefix_watch_streams_only_that_prefix() {
    let mut lab = lab_or_skip!(3);
    let _agents = lab.start_cluster(3);
    let dir = lab.dir().to_path_buf();
    let out = dir.join("watch");
    let script = format!(
        "import urllib.request\n\
         r = urllib.request.urlopen('http://127.0.0.1:7947/v1/watch/default?prefix=cfg/', timeout=30)\n\
         open('{o}.started', 'w').close()\n\
         seen = []\n\
         while len(seen) < 2:\n\
         \x20   line = r.readline().decode()\n\
         \x20   if line.startswith('data:'):\n\
         \x20       seen.append(line[5:].strip())\n\
         open('{o}', 'w').write('\\n'.join(seen))\n",
        o = out.display()
    );
    let _w = lab.spawn_in(0, &["python3", "-c", &script]);
    lab.wait_for(SECS(10), "the watch is open", |_| {
        dir.join("watch.started").exists()
    });
    for key in ["other/x", "cfg/a", "cfgx", "cfg/b"] {
        let (code, _, err) = lab.kv(1, &["put", "default", key, "v"]);
        assert_eq!(code, 0, "{err}");
    }
    lab.wait_for(SECS(10), "two changes under cfg/ arrive", |_| out.exists());
    let seen = std::fs::read_to_string(&out).expect("read");
    let keys: Vec<String> = seen
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["key"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(keys, vec!["cfg/a", "cfg/b"], "{seen}");
}

#[test]
fn chorus_leave_stops_the_agent_and_peers_report_it_left() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    let mark = since(&lab, 0, 0).1;
    let (code, out, err) = lab.cli(agents[2], "leave", &[]);
    assert_eq!(code, 0, "{out} {err}");
    let status = lab.wait_exit(agents[2], SECS(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the agent exits cleanly: {status:?}"
    );
    lab.wait_for(SECS(10), "n1 reports n3 left", |l| {
        since(l, 0, mark).0.iter().any(|(_, t)| t == "member_left")
    });
    assert!(
        !since(&lab, 0, mark)
            .0
            .iter()
            .any(|(_, t)| t == "member_failed"),
        "a leave is not a failure"
    );
}

#[test]
fn sighup_applies_new_handlers() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    let out = lab.dir().join("n1.reloaded");
    lab.append_config(
        agents[0],
        &format!(
            "[[handlers]]\nevents = [\"member_failed\"]\n\
             command = [\"sh\", \"-c\", \"echo $CHORUS_MEMBER_NAME >> {}\"]\n",
            out.display()
        ),
    );
    lab.sighup(agents[0]);
    lab.wait_for(SECS(10), "the reload is logged, naming the handlers", |l| {
        l.log_of(agents[0]).lines().any(|line| {
            line.contains("SIGHUP: configuration reloaded") && line.contains("\"handlers\"")
        })
    });
    lab.kill9(agents[2]);
    lab.wait_for(SECS(15), "the reloaded handler runs", |_| {
        std::fs::read_to_string(&out).is_ok_and(|s| s.trim() == "n3")
    });
}

#[test]
fn chorus_monitor_follows_the_agent_s_log_live() {
    let mut lab = lab_or_skip!(3);
    let _agents = lab.start_cluster(3);
    let out = lab.dir().join("monitor.out");
    let cmd = format!("exec {} monitor > {}", support::CHORUS, out.display());
    let _m = lab.spawn_in(lab.agents[0].host, &["sh", "-c", &cmd]);
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    // `chorus events` beside it, on the same stream-following code.
    let ev_out = lab.dir().join("events.out");
    let cmd = format!(
        "exec {} events --json --type member_failed > {}",
        support::CHORUS,
        ev_out.display()
    );
    let _e = lab.spawn_in(lab.agents[0].host, &["sh", "-c", &cmd]);
    // The agent logs each new follower: the follower's first line travelled through the tee.
    lab.wait_for(SECS(10), "the monitor is following", |_| {
        read().contains("a client follows the log")
    });
    lab.wait_for(SECS(10), "chorus events is subscribed", |l| {
        l.metric(0, "chorus_event_subscribers") >= 1
    });
    // A line logged after it started: the failure of n3, seen live, not read back from a file.
    lab.kill9(2);
    lab.wait_for(SECS(20), "the monitor shows n3 failed", |_| {
        read()
            .lines()
            .any(|l| l.contains("member_failed") && l.contains("n3"))
    });
    lab.wait_for(SECS(10), "chorus events prints n3's failure", |_| {
        std::fs::read_to_string(&ev_out)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                v["type"] == "member_failed" && v["member"]["name"] == "n3"
            })
    });
    let (code, v) = lab.http(0, "GET", "/v1/status");
    assert_eq!(code, 200, "the agent serves on while followed: {v}");
}

/// A 2|3 split: the `quorum_lost` handler runs on the two nodes of the minority and nowhere
/// else; after the heal `quorum_regained` runs on those two.
#[test]
fn a_split_runs_quorum_lost_handlers_on_the_minority_only_and_regained_after_the_heal() {
    let mut lab = lab_or_skip!(5);
    let dir = lab.dir().to_path_buf();
    let names: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
    let agents: Vec<usize> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let out = dir.join(format!("{name}.quorum"));
            let mut spec = support::AgentSpec::new(name, 5);
            spec.extra_toml = format!(
                "[[handlers]]\n\
                 events = [\"quorum_lost\", \"quorum_regained\"]\n\
                 command = [\"sh\", \"-c\", \"echo \\\"$CHORUS_EVENT\\\" >> {out}\"]\n",
                out = out.display()
            );
            lab.start(i, spec)
        })
        .collect();
    lab.wait_whole(&agents);
    let runs = |i: usize| -> Vec<String> {
        std::fs::read_to_string(dir.join(format!("{}.quorum", names[i])))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    // A node starts without a quorum and reports `quorum_regained` when it first reaches one:
    // wait for those runs, then start the record afresh.
    lab.wait_for(SECS(20), "every node reached its first quorum", |_| {
        (0..5).all(|i| runs(i) == vec!["quorum_regained".to_string()])
    });
    for name in &names {
        std::fs::remove_file(dir.join(format!("{name}.quorum"))).expect("remove");
    }
    lab.partition(&[&[0, 1], &[2, 3, 4]]);
    lab.wait_for(SECS(20), "the minority runs quorum_lost", |_| {
        runs(0).contains(&"quorum_lost".to_string()) && runs(1).contains(&"quorum_lost".to_string())
    });
    // The majority has seen the minority fail: had it lost quorum, its handler would have run.
    lab.wait_for(SECS(20), "the majority holds n1 and n2 failed", |l| {
        (2..5).all(|v| {
            ["n1", "n2"]
                .iter()
                .all(|n| l.state_of(v, n).as_deref() == Some("failed"))
        })
    });
    for (i, name) in names.iter().enumerate().skip(2) {
        assert!(runs(i).is_empty(), "{name} ran {:?}", runs(i));
    }
    lab.heal();
    lab.wait_for(SECS(30), "the minority runs quorum_regained", |_| {
        [0, 1]
            .iter()
            .all(|i| runs(*i) == vec!["quorum_lost".to_string(), "quorum_regained".to_string()])
    });
    for (i, name) in names.iter().enumerate().skip(2) {
        assert!(runs(i).is_empty(), "{name} ran {:?}", runs(i));
    }
}
