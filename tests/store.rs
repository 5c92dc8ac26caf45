//! End-to-end store tests: real agents in network namespaces, quorum writes and reads through the
//! `chorus kv` command line, partitions, kill -9, and bad input.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::{CHORUS, Lab};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn put(lab: &Lab, a: usize, key: &str, value: &str) -> (i32, String) {
    let (code, _, err) = lab.kv(a, &["put", "default", key, value]);
    (code, err)
}

fn get(lab: &Lab, a: usize, key: &str, consistency: &str) -> (i32, String) {
    let (code, out, _) = lab.kv(a, &["get", "--consistency", consistency, "default", key]);
    (code, out)
}

fn digests(lab: &Lab, agents: &[usize]) -> Vec<String> {
    agents
        .iter()
        .map(|a| {
            lab.status(*a)
                .map(|s| s["stores"]["default"]["digest"].to_string())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn a_write_on_any_node_is_readable_everywhere() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    for (i, a) in agents.iter().enumerate() {
        let key = format!("from-n{}", i + 1);
        assert_eq!(
            put(&lab, *a, &key, &format!("value-{i}")).0,
            0,
            "{}",
            lab.all_logs()
        );
    }
    for (i, _) in agents.iter().enumerate() {
        let key = format!("from-n{}", i + 1);
        for reader in &agents {
            assert_eq!(
                get(&lab, *reader, &key, "quorum"),
                (0, format!("value-{i}"))
            );
        }
        lab.wait_for(SECS(10), "local reads see the write everywhere", |l| {
            agents
                .iter()
                .all(|r| get(l, *r, &key, "local") == (0, format!("value-{i}")))
        });
    }
}

#[test]
fn a_minority_never_writes_and_a_healed_cluster_converges() {
    let mut lab = lab_or_skip!(5);
    let agents = lab.start_cluster(5);
    assert_eq!(put(&lab, 2, "before", "split").0, 0);
    lab.partition(&[&[0, 1], &[2, 3, 4]]);

    // Write from the minority until it reports no_quorum (fast) on both nodes; none may succeed.
    let mut minority_keys = Vec::new();
    let mut seen_no_quorum = [false, false];
    let mut i = 0;
    lab.wait_for(SECS(20), "the minority fails writes with no_quorum", |l| {
        for (m, seen) in seen_no_quorum.iter_mut().enumerate() {
            let key = format!("minority-{m}-{i}");
            let (code, err) = put(l, m, &key, "must-not-exist");
            assert_ne!(
                code,
                0,
                "a write on minority node n{} was acknowledged",
                m + 1
            );
            *seen |= code == 4 && err.contains("no_quorum");
            minority_keys.push(key);
        }
        i += 1;
        seen_no_quorum.iter().all(|s| *s)
    });
    // The majority keeps writing.
    let mut acked = BTreeMap::new();
    for k in 0..20 {
        let key = format!("majority-{k}");
        let writer = 2 + k % 3;
        assert_eq!(
            put(&lab, writer, &key, &format!("v{k}")).0,
            0,
            "majority write failed"
        );
        acked.insert(key, format!("v{k}"));
    }

    // Not visible anywhere before the heal either: not found on the majority, and on the
    // minority a read is refused (no_quorum, exit 4) or not found, never a value.
    for key in &minority_keys {
        for a in &agents {
            let code = get(&lab, *a, key, "local").0;
            assert!(
                code == 3 || (*a < 2 && code == 4),
                "minority write {key} on agent {a} during the split: exit {code}"
            );
        }
    }

    lab.heal();
    lab.wait_for(SECS(30), "one cluster with quorum everywhere", |l| {
        agents.iter().all(|a| {
            l.status(*a)
                .is_some_and(|s| s["quorum"]["has_quorum"] == true)
        })
    });
    lab.wait_for(SECS(30), "identical digests on every replica", |l| {
        let d = digests(l, &agents);
        d.iter().all(|x| *x == d[0] && !x.is_empty())
    });
    for key in &minority_keys {
        for a in &agents {
            assert_eq!(
                get(&lab, *a, key, "local").0,
                3,
                "minority write {key} became visible on agent {a}"
            );
        }
    }
    for (key, value) in &acked {
        for a in &agents {
            assert_eq!(
                get(&lab, *a, key, "quorum"),
                (0, value.clone()),
                "acknowledged {key} lost"
            );
        }
    }
    assert_eq!(get(&lab, 0, "before", "quorum"), (0, "split".to_string()));
}

#[test]
fn killing_a_minority_during_quorum_writes_loses_no_acknowledged_write() {
    let mut lab = lab_or_skip!(5);
    let agents = lab.start_cluster(5);
    let mut acked = BTreeMap::new();
    for k in 0..120 {
        if k == 40 {
            lab.kill9(3);
        }
        if k == 70 {
            lab.kill9(4);
        }
        let key = format!("k{k}");
        let (code, _) = put(&lab, k % 3, &key, &format!("v{k}"));
        if code == 0 {
            acked.insert(key, format!("v{k}"));
        }
    }
    assert!(
        acked.len() >= 100,
        "too few writes acknowledged: {}",
        acked.len()
    );
    for (key, value) in &acked {
        for a in &agents[..3] {
            assert_eq!(
                get(&lab, *a, key, "quorum"),
                (0, value.clone()),
                "acknowledged {key} lost"
            );
        }
    }
}

#[test]
fn bad_input_gets_documented_errors_and_changes_nothing() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    let before = digests(&lab, &agents);
    let big = "x".repeat((1 << 20) + 1);
    let path = lab.dir().join("big");
    std::fs::write(&path, &big).unwrap();
    let out = lab.exec(
        0,
        &[
            "sh",
            "-c",
            &format!("{CHORUS} kv put default big - < {}", path.display()),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("too_large"));
    let cases: [(&[&str], i32, &str); 5] = [
        (&["put", "Bad_Name", "k", "v"], 6, "bad_request"),
        (&["put", "nosuch", "k", "v"], 3, "not_found"),
        (
            &["put", "--ttl", "soon", "default", "k", "v"],
            6,
            "bad_request",
        ),
        (&["get", "default", "absent"], 3, "not_found"),
        (
            &["put", "--consistency", "eventual", "default", "k", "v"],
            6,
            "bad_request",
        ),
    ];
    for (args, code, text) in cases {
        let (got, _, err) = lab.kv(0, args);
        assert_eq!(got, code, "chorus kv {args:?}: {err}");
        assert!(err.contains(text), "chorus kv {args:?}: {err}");
    }
    assert_eq!(
        digests(&lab, &agents),
        before,
        "a rejected request changed a replica"
    );
}
