//! End-to-end tests of the strong keyspace: real agents in network namespaces, compare-and-sets
//! through the `chorus strong` command line, kill -9 of every agent, a partition, and bad input.

mod support;

use std::time::Duration;
use support::Lab;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// `chorus strong put KEY VALUE [flags]` on agent `a`: (exit code, stdout trimmed, stderr).
fn put(lab: &Lab, a: usize, key: &str, value: &str, flags: &[&str]) -> (i32, String, String) {
    let mut args = vec!["put", key, value];
    args.extend_from_slice(flags);
    let (code, out, err) = lab.strong(a, &args);
    (code, out.trim().to_string(), err)
}

fn get(lab: &Lab, a: usize, key: &str) -> (i32, String) {
    let (code, out, _) = lab.strong(a, &["get", key]);
    (code, out)
}

#[test]
fn compare_and_set_holds_across_agents_and_survives_kill_9_of_every_agent() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    assert_eq!(
        put(&lab, 0, "job", "a", &["--if-absent"]).1,
        "1",
        "{}",
        lab.all_logs()
    );
    let (code, _, err) = put(&lab, 1, "job", "x", &["--if-absent"]);
    assert_eq!(code, 7, "create over an existing value: {err}");
    assert!(
        err.contains("conflict") && err.contains("version 1"),
        "{err}"
    );
    assert_eq!(put(&lab, 1, "job", "b", &["--if-version", "1"]).1, "2");
    let (code, _, err) = put(&lab, 2, "job", "stale", &["--if-version", "1"]);
    assert_eq!(code, 7, "a stale compare-and-set: {err}");
    assert_eq!(get(&lab, 2, "job"), (0, "b".to_string()));

    for a in &agents {
        lab.kill9(*a);
    }
    for a in &agents {
        lab.restart(*a);
    }
    lab.wait_whole(&agents);
    lab.wait_for(
        SECS(20),
        "the strong key reads back after kill -9 of every agent",
        |l| get(l, 0, "job") == (0, "b".to_string()),
    );
    assert_eq!(put(&lab, 2, "job", "c", &["--if-version", "2"]).1, "3");
    let (code, _, err) = put(&lab, 0, "job", "d", &["--if-version", "2"]);
    assert_eq!(
        code, 7,
        "the version taken before the crash is stale now: {err}"
    );
    for a in &agents {
        assert_eq!(get(&lab, *a, "job"), (0, "c".to_string()));
    }
}

#[test]
fn a_minority_cannot_change_a_strong_key() {
    let mut lab = lab_or_skip!(5);
    let _agents = lab.start_cluster(5);
    assert_eq!(put(&lab, 4, "leader", "n5", &[]).1, "1");
    lab.partition(&[&[0, 1], &[2, 3, 4]]);
    lab.wait_for(SECS(20), "the minority refuses with no_quorum", |l| {
        let (code, out, err) = put(l, 0, "leader", "n1", &[]);
        assert_ne!(code, 0, "the minority changed a strong key: {out}");
        code == 4 && err.contains("no_quorum")
    });
    lab.wait_for(SECS(20), "the majority changes it", |l| {
        put(l, 2, "leader", "n3", &["--if-version", "1"]).0 == 0
    });
    // The member list still answers on the minority; the leader is unknown there, and says why.
    let (code, v) = lab.http(0, "GET", "/v1/members");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["leader"], serde_json::Value::Null, "{v}");
    assert!(
        v["leader_error"]
            .as_str()
            .is_some_and(|e| e.contains("quorum")),
        "{v}"
    );
    assert_eq!(v["members"].as_array().map(Vec::len), Some(5), "{v}");
    lab.heal();
    lab.wait_for(SECS(20), "every agent reads the majority's value", |l| {
        (0..5).all(|a| get(l, a, "leader") == (0, "n3".to_string()))
    });
}

#[test]
fn bad_strong_requests_get_documented_errors_and_change_nothing() {
    let mut lab = lab_or_skip!(3);
    let _agents = lab.start_cluster(3);
    let (code, _, err) = put(&lab, 0, "absent", "v", &["--if-version", "4"]);
    assert_eq!(code, 7, "compare-and-set on a missing key: {err}");
    assert!(err.contains("version 0 with no value"), "{err}");
    let (code, _, err) = lab.strong(0, &["del", "absent"]);
    assert_eq!(code, 3, "delete of a key without a value: {err}");
    assert_eq!(get(&lab, 1, "absent").0, 3, "nothing was created");
    let (code, _, err) = lab.strong(0, &["put", "k", "v", "--if-version", "x"]);
    assert_eq!(code, 2, "a version that is not a number: {err}");
    let long = "k".repeat(coord_max_key() + 1);
    let (code, _, err) = put(&lab, 0, &long, "v", &[]);
    assert_eq!(code, 6, "an oversized key: {err}");
    assert!(err.contains("bad_request"), "{err}");
}

fn coord_max_key() -> usize {
    coord::MAX_KEY_BYTES
}

#[test]
fn a_lock_passes_to_the_next_owner_with_a_higher_token_only_after_the_lease_and_delay() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    let t0 = std::time::Instant::now();
    let (code, a) = lab.http(0, "PUT", "/v1/lock/job?owner=a&ttl=2s&lock_delay=1s");
    assert_eq!(code, 200, "{a} {}", lab.all_logs());
    assert_eq!(a["fencing_token"], 1);
    let act_for = a["act_for_ms"].as_u64().unwrap();
    assert!(
        act_for > 1500 && act_for < 2000,
        "acts for {act_for} ms of a 2 s lease"
    );
    let (code, busy) = lab.http(1, "PUT", "/v1/lock/job?owner=b&ttl=2s");
    assert_eq!(
        (code, busy["error"]["code"].as_str()),
        (409, Some("locked")),
        "{busy}"
    );
    assert_eq!(busy["error"]["holder"], "a");
    // a stops renewing (it hung); b waits and gets the lock, with the next token, no sooner
    // than the lease and the lock delay (3 s) after a got it.
    let sent = std::time::Instant::now();
    let (code, b) = lab.http(
        1,
        "PUT",
        "/v1/lock/job?owner=b&ttl=2s&lock_delay=0s&wait=20s",
    );
    let answered = sent.elapsed().as_millis() as u64;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["fencing_token"], 2);
    // `act_for_ms` counts from the request's sending, as the docs tell holders to count, so a
    // wait of seconds is added: b still has most of its window (1.76 s) when the answer comes,
    // and never more than the lease.
    let b_act = b["act_for_ms"].as_u64().unwrap();
    assert!(
        b_act > answered + 1000 && b_act < answered + 2000,
        "acts for {b_act} ms from a request answered after {answered} ms"
    );
    // The grantors' clocks are this machine's: their lease began after t0.
    let took = t0.elapsed();
    assert!(
        took >= SECS(3),
        "taken over {took:?} after a got it: before the lease and delay"
    );
    assert!(took < SECS(6), "taken over only {took:?} after a got it");
    let (code, lost) = lab.http(2, "POST", "/v1/lock/job/renew?owner=a&token=1");
    assert_eq!(
        (code, lost["error"]["code"].as_str()),
        (409, Some("lost")),
        "{lost}"
    );
    // The lock survives kill -9 of every agent: the holder and its token are durable.
    for a in &agents {
        lab.kill9(*a);
    }
    for a in &agents {
        lab.restart(*a);
    }
    lab.wait_whole(&agents);
    lab.wait_for(
        SECS(20),
        "the lock reads back after kill -9 of every agent",
        |l| {
            let (code, st) = l.http(2, "GET", "/v1/lock/job");
            code == 200 && st["holder"] == "b" && st["fencing_token"] == 2
        },
    );
    let (code, rel) = lab.http(0, "DELETE", "/v1/lock/job?owner=b&token=2");
    assert_eq!((code, rel["released"].as_u64()), (200, Some(2)), "{rel}");
    let (code, c) = lab.http(2, "PUT", "/v1/lock/job?owner=c&ttl=5s");
    assert_eq!((code, c["fencing_token"].as_u64()), (200, Some(3)), "{c}");
}

#[test]
fn bad_lock_requests_get_documented_errors() {
    let mut lab = lab_or_skip!(3);
    let _agents = lab.start_cluster(3);
    for (path, method) in [
        ("/v1/lock/job?owner=a&ttl=100ms", "PUT"),
        ("/v1/lock/job?ttl=5s", "PUT"),
        ("/v1/lock/job?owner=a&ttl=soon", "PUT"),
        ("/v1/lock/job?owner=a&wait=1h", "PUT"),
        ("/v1/lock/job/renew?owner=a&token=x", "POST"),
    ] {
        let (code, e) = lab.http(0, method, path);
        assert_eq!(
            (code, e["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{method} {path}: {e}"
        );
    }
    let (code, e) = lab.http(0, "DELETE", "/v1/lock/job?owner=a&token=7");
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (409, Some("lost")),
        "{e}"
    );
    let (code, st) = lab.http(1, "GET", "/v1/lock/job");
    assert_eq!(
        (code, st["holder"].clone()),
        (200, serde_json::Value::Null),
        "nothing changed"
    );
}

/// The times (ns since the epoch, one clock: the hosts share this machine's) of the lines of
/// `log` that start with `what`.
fn times(log: &std::path::Path, what: &str) -> Vec<u128> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(what))
        .filter_map(|t| t.trim().parse().ok())
        .collect()
}

#[test]
fn a_holder_cut_off_in_a_minority_stops_its_command_before_the_majority_starts_one() {
    let mut lab = lab_or_skip!(5);
    let _agents = lab.start_cluster(5);
    let log = lab.dir().join("lock.log");
    let log_s = log.to_string_lossy().into_owned();
    let job = |who: &str| {
        format!(
            "echo start-{who} $(date +%s%N) >> {log_s}; \
             trap 'echo term-{who} $(date +%s%N) >> {log_s}; exit 0' TERM; \
             while :; do sleep 0.02; done"
        )
    };
    let (a_job, b_job) = (job("a"), job("b"));
    let lock = |job: &str| {
        vec![
            support::CHORUS.to_string(),
            "lock".into(),
            "job".into(),
            "--ttl".into(),
            "3s".into(),
            "--lock-delay".into(),
            "1s".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            job.to_string(),
        ]
    };
    let a_args = lock(&a_job);
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let _a = lab.spawn_in(0, &a_refs);
    lab.wait_for(SECS(20), "the first holder's command starts", |_| {
        !times(&log, "start-a ").is_empty()
    });
    let b_args = lock(&b_job);
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let _b = lab.spawn_in(3, &b_refs);
    // While the network is whole a's renewals keep the lock past its lease and delay: b waits.
    let watch = std::time::Instant::now();
    while watch.elapsed() < SECS(5) {
        assert!(
            times(&log, "start-b ").is_empty(),
            "b started while a held the lock"
        );
        let (code, st) = lab.http(2, "GET", "/v1/lock/job");
        assert_eq!((code, st["fencing_token"].as_u64()), (200, Some(1)), "{st}");
    }
    lab.partition(&[&[0, 1], &[2, 3, 4]]);
    let cut = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    lab.wait_for(SECS(30), "the majority's command starts", |_| {
        !times(&log, "start-b ").is_empty()
    });
    let term_a = times(&log, "term-a ");
    let start_b = times(&log, "start-b ");
    assert_eq!(term_a.len(), 1, "a's command got SIGTERM once: {term_a:?}");
    assert!(
        term_a[0] < start_b[0],
        "a's command was stopped at {} ns, after b's started at {} ns",
        term_a[0],
        start_b[0]
    );
    eprintln!(
        "a stopped {:.3} s before b started; b started {:.3} s after the partition (ttl 3 s, \
         lock delay 1 s)",
        (start_b[0] - term_a[0]) as f64 / 1e9,
        (start_b[0] - cut) as f64 / 1e9
    );
    lab.heal();
}

/// Five agents n1..n5, every one a candidate for the cluster leader with a 3 s lease and
/// `lock_delay`; waits until every one lists all alive.
fn start_candidates(lab: &mut Lab, lock_delay: &str) -> Vec<usize> {
    let agents: Vec<usize> = (0..5)
        .map(|i| {
            let mut spec = support::AgentSpec::new(&format!("n{}", i + 1), 5);
            spec.extra_toml = format!(
                "[leader]\ncandidate = true\nttl = \"3s\"\nlock_delay = \"{lock_delay}\"\n"
            );
            lab.start(i, spec)
        })
        .collect();
    lab.wait_whole(&agents);
    agents
}

#[test]
fn a_new_leader_with_a_higher_token_follows_kill_9_of_the_leader_within_ttl_plus_1s() {
    let mut lab = lab_or_skip!(5);
    let _agents = start_candidates(&mut lab, "0s");
    let leader_of = |l: &Lab, a: usize| {
        let (code, v) = l.http(a, "GET", "/v1/leader");
        (code == 200)
            .then(|| {
                Some((
                    v["leader"].as_str()?.to_string(),
                    v["fencing_token"].as_u64()?,
                ))
            })
            .flatten()
    };
    let mut first = None;
    lab.wait_for(SECS(20), "a leader is elected", |l| {
        first = leader_of(l, 0);
        first.is_some()
    });
    let (name, token) = first.expect("elected");
    let old: usize = name.trim_start_matches('n').parse::<usize>().expect("nN") - 1;
    // It knows it leads; nobody else thinks it does.
    let leading: Vec<usize> = (0..5)
        .filter(|a| {
            lab.status(*a)
                .is_some_and(|s| s["leader"]["leading"] == true)
        })
        .collect();
    assert_eq!(leading, vec![old], "exactly the elected node leads");
    // `/v1/members` marks it, and only it, on every node.
    for a in 0..5 {
        let (code, v) = lab.http(a, "GET", "/v1/members");
        assert_eq!(code, 200, "{v}");
        let marked: Vec<&str> = v["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter(|m| m["leader"] == true)
            .filter_map(|m| m["name"].as_str())
            .collect();
        assert_eq!(marked, vec![name.as_str()], "members of n{}: {v}", a + 1);
        assert_eq!(v["leader"]["fencing_token"], token, "{v}");
    }
    let t = std::time::Instant::now();
    lab.kill9(old);
    let other = (old + 1) % 5;
    let mut next = None;
    lab.wait_for(SECS(15), "a new leader with a higher token", |l| {
        next = leader_of(l, other).filter(|(n, t)| *n != name && *t > token);
        next.is_some()
    });
    let took = t.elapsed();
    assert!(
        took <= SECS(4),
        "a new leader {next:?} only {took:?} after kill -9 of {name} (ttl 3 s + 1 s)"
    );
    eprintln!("new leader {next:?} {took:?} after kill -9 of the leader");
}

#[test]
fn a_superseded_holder_s_fenced_write_is_refused() {
    let mut lab = lab_or_skip!(3);
    let _agents = lab.start_cluster(3);
    let (code, a) = lab.http(0, "PUT", "/v1/lock/job?owner=a&ttl=1s&lock_delay=0s");
    assert_eq!((code, a["fencing_token"].as_u64()), (200, Some(1)), "{a}");
    assert_eq!(put(&lab, 0, "out", "from-a", &["--fence", "job:1"]).0, 0);
    // a stalls past its lease; b takes over and writes with its newer token.
    let (code, b) = lab.http(
        1,
        "PUT",
        "/v1/lock/job?owner=b&ttl=5s&lock_delay=0s&wait=10s",
    );
    assert_eq!((code, b["fencing_token"].as_u64()), (200, Some(2)), "{b}");
    assert_eq!(put(&lab, 1, "out", "from-b", &["--fence", "job:2"]).0, 0);
    // a wakes up and writes with its old token: refused, nothing changes.
    let (code, _, err) = put(&lab, 0, "out", "late-a", &["--fence", "job:1"]);
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("stale_token") && err.contains("token 2"),
        "{err}"
    );
    assert_eq!(get(&lab, 2, "out"), (0, "from-b".to_string()));
    let (code, _, err) = put(&lab, 0, "out", "x", &["--fence", "job"]);
    assert_eq!(code, 6, "a fence without a token: {err}");
}

#[test]
fn a_named_election_passes_to_the_next_candidate_with_its_proclamation_and_a_higher_token() {
    let mut lab = lab_or_skip!(3);
    let _agents = lab.start_cluster(3);
    let log = lab.dir().join("elect.log");
    let log_s = log.to_string_lossy().into_owned();
    let elect = |who: &str| -> Vec<String> {
        let job = format!(
            "echo start-{who} $CHORUS_FENCING_TOKEN >> {log_s}; \
             trap 'echo term-{who} >> {log_s}; exit 0' TERM; while :; do sleep 0.02; done"
        );
        [
            support::CHORUS,
            "elect",
            "jobs",
            &format!("{who} is in charge"),
            "--candidate",
            who,
            "--ttl",
            "3s",
            "--lock-delay",
            "0s",
            "--",
            "sh",
            "-c",
            &job,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let observe = |l: &Lab, a: usize| {
        let (code, v) = l.http(a, "GET", "/v1/election/jobs");
        assert_eq!(code, 200, "{v}");
        (
            v["leader"].as_str().map(String::from),
            v["fencing_token"].as_u64(),
            v["value"].as_str().map(String::from),
        )
    };
    assert_eq!(observe(&lab, 2).0, None, "nobody leads a new election");

    let a_args = elect("a");
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let a = lab.spawn_in(0, &a_refs);
    lab.wait_for(SECS(20), "a leads, seen from another node", |l| {
        observe(l, 2) == (Some("a".into()), Some(1), Some("a is in charge".into()))
    });
    let b_args = elect("b");
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let _b = lab.spawn_in(1, &b_refs);

    // The leader says something new; a candidate that does not lead, or a stale token, cannot.
    let (code, v) = lab.request(
        2,
        "POST",
        "/v1/election/jobs/proclaim?candidate=a&token=1",
        b"a, later",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(observe(&lab, 1).2.as_deref(), Some("a, later"));
    let (code, v) = lab.request(
        2,
        "POST",
        "/v1/election/jobs/proclaim?candidate=b&token=1",
        b"b!",
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (409, Some("lost")),
        "{v}"
    );
    // Bad input: documented errors, nothing changes.
    let (code, v) = lab.request(2, "PUT", "/v1/election/jobs?candidate=c", &[0xff, 0xfe]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    let big = vec![b'x'; 5000];
    let (code, v) = lab.request(2, "PUT", "/v1/election/jobs?candidate=c", &big);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{v}"
    );
    assert_eq!(v["error"]["max"], 4096, "{v}");
    let (code, v) = lab.request(2, "PUT", "/v1/election/jobs", b"x");
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    assert_eq!(
        observe(&lab, 2).0.as_deref(),
        Some("a"),
        "bad input changed the leader"
    );

    // a stops (SIGTERM): its command is stopped, it resigns, and b leads at once with a higher
    // token and its own proclamation (no lease to wait out after a resignation).
    drop(a);
    lab.wait_for(SECS(10), "b leads with token 2 and its proclamation", |l| {
        observe(l, 0) == (Some("b".into()), Some(2), Some("b is in charge".into()))
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec!["start-a 1", "term-a", "start-b 2"],
        "each leader's command ran with its token, the first stopped before the second started"
    );
    // The old leader's token is refused now.
    let (code, v) = lab.request(
        0,
        "POST",
        "/v1/election/jobs/proclaim?candidate=a&token=1",
        b"a?",
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (409, Some("lost")),
        "{v}"
    );
    assert_eq!(observe(&lab, 2).2.as_deref(), Some("b is in charge"));
}

#[test]
fn a_session_renews_all_its_locks_at_once_and_its_locks_go_when_it_lapses_or_is_destroyed() {
    let mut lab = lab_or_skip!(3);
    let _agents = lab.start_cluster(3);
    let (code, id, err) = lab.cli(
        0,
        "session",
        &["create", "--ttl", "3s", "--lock-delay", "0s"],
    );
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_string();
    assert_eq!(id.len(), 16, "a session id: {id:?}");
    // Locks taken for the session through different agents; one renewal keeps both.
    for (a, name) in [(0, "a"), (1, "b")] {
        let (code, v) = lab.request(a, "PUT", &format!("/v1/lock/{name}?session={id}"), b"");
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["holder"], format!("session:{id}"), "{v}");
        assert_eq!(v["ttl_ms"], 3000, "the session's lease: {v}");
    }
    let taken_by_other = |l: &Lab, name: &str| {
        l.request(
            2,
            "PUT",
            &format!("/v1/lock/{name}?owner=other&ttl=10s"),
            b"",
        )
    };
    let start = std::time::Instant::now();
    while start.elapsed() < SECS(5) {
        let (code, out, err) = lab.cli(2, "session", &["renew", &id, "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
        assert_eq!(v["locks"], serde_json::json!({"a": 1, "b": 1}), "{v}");
        assert_eq!(v["lost"], serde_json::json!([]), "{v}");
        let (code, v) = taken_by_other(&lab, "a");
        assert_eq!(
            (code, v["error"]["code"].as_str()),
            (409, Some("locked")),
            "{v}"
        );
        std::thread::sleep(Duration::from_millis(500)); // the renewal interval, not a wait on a condition
    }
    // No more renewals: the session's locks lapse with it, and another owner gets a higher token.
    let mut got = serde_json::Value::Null;
    lab.wait_for(
        SECS(10),
        "another owner takes lock a after the lease",
        |l| {
            let (code, v) = taken_by_other(l, "a");
            got = v;
            code == 200
        },
    );
    assert_eq!(got["fencing_token"], 2, "{got}");
    let (code, v) = lab.request(1, "GET", &format!("/v1/session/{id}"), b"");
    assert_eq!((code, v["live"].as_bool()), (200, Some(false)), "{v}");
    // A late renewal revives the session and the lock nobody took, and reports the one lost.
    let (code, out, _) = lab.cli(0, "session", &["renew", &id, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["lost"], serde_json::json!(["a"]), "{v}");
    assert_eq!(v["locks"], serde_json::json!({"b": 1}), "{v}");
    // Destroying it releases b at once: the next owner gets token 2 without waiting a lease.
    let (code, _, err) = lab.cli(1, "session", &["destroy", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, v) = taken_by_other(&lab, "b");
    assert_eq!((code, v["fencing_token"].as_u64()), (200, Some(2)), "{v}");
    // Bad input: documented errors, nothing changes.
    let (code, _, err) = lab.cli(0, "session", &["show", &id]);
    assert_eq!(code, 3, "a destroyed session is not_found: {err}");
    let (code, v) = lab.request(0, "PUT", &format!("/v1/lock/c?session={id}"), b"");
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (code, v) = lab.request(0, "PUT", "/v1/lock/c?session=nothex", b"");
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    let (code, _, _) = lab.cli(0, "session", &["create", "--ttl", "0s"]);
    assert_ne!(code, 0, "a session without a lease");
    let (code, v) = lab.request(0, "PUT", &format!("/v1/lock/c?owner=session:{id}"), b"");
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    let (code, v) = lab.request(0, "GET", "/v1/lock/c", b"");
    assert_eq!(
        (code, v["holder"].clone()),
        (200, serde_json::Value::Null),
        "{v}"
    );
}

#[test]
fn a_cluster_leader_cut_off_in_a_minority_steps_down_and_after_the_heal_there_is_one_leader() {
    let mut lab = lab_or_skip!(5);
    let _agents = start_candidates(&mut lab, "1s");
    let leading = |l: &Lab| -> Vec<usize> {
        (0..5)
            .filter(|a| l.status(*a).is_some_and(|s| s["leader"]["leading"] == true))
            .collect()
    };
    let mut first = Vec::new();
    lab.wait_for(SECS(20), "one node leads", |l| {
        first = leading(l);
        first.len() == 1
    });
    let old = first[0];
    let token = |l: &Lab, a: usize| {
        l.status(a)
            .and_then(|s| s["leader"]["fencing_token"].as_u64())
    };
    let old_token = token(&lab, old).expect("the leader's token");
    // Cut the leader off with one other node.
    let buddy = (old + 1) % 5;
    let majority: Vec<usize> = (0..5).filter(|a| *a != old && *a != buddy).collect();
    lab.partition(&[&[old, buddy], &majority]);
    let mut new = Vec::new();
    lab.wait_for(
        SECS(20),
        "the majority has a new leader, the old one stepped down",
        |l| {
            new = leading(l);
            new.len() == 1 && majority.contains(&new[0])
        },
    );
    let new_token = token(&lab, new[0]).expect("the new leader's token");
    assert!(new_token > old_token, "tokens {old_token} then {new_token}");
    lab.heal();
    // After the heal: still exactly one leader, the same, and every node's /v1/leader agrees.
    lab.wait_for(SECS(20), "every node names the one leader", |l| {
        (0..5).all(|a| {
            let (code, v) = l.http(a, "GET", "/v1/leader");
            code == 200 && v["fencing_token"].as_u64() == Some(new_token)
        })
    });
    let start = std::time::Instant::now();
    while start.elapsed() < SECS(5) {
        assert_eq!(leading(&lab), new, "one leader after the heal");
    }
}
