//! End to end: the store's write-ahead log keeps every acknowledged write across `kill -9` of
//! every node, a damaged log stops the start until `--repair`, after which peers refill it, and a
//! node that lost its log catches up from a quorum of peers before it votes or reads fresh; a
//! backup saved from a running node restores onto an empty one.

mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{AgentSpec, CHORUS, Lab};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// `chorus kv ARGS...` on agent `a`: exit code and stdout without its final newline.
fn kv(lab: &Lab, a: usize, args: &[&str]) -> (i32, String) {
    let (code, out, _) = lab.kv(a, args);
    (code, out.trim_end().to_string())
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::File::open(path)
        .map(|f| {
            std::io::BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .collect()
        })
        .unwrap_or_default()
}

/// Starts a client in host 0 that writes k1, k2, ... (up to 4000) and prints each key whose put
/// was acknowledged, to the returned file.
fn write_stream(lab: &Lab) -> (std::process::Child, std::path::PathBuf) {
    let acked_file = lab.dir().join("acked");
    let script = format!(
        "i=0; while [ $i -lt 4000 ]; do i=$((i+1)); \
         if {CHORUS} kv put default k$i v$i >/dev/null 2>&1; then echo k$i; fi; done"
    );
    let writer = Command::new("ip")
        .args(["netns", "exec", lab.ns(0), "sh", "-c", &script])
        .stdout(std::fs::File::create(&acked_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (writer, acked_file)
}

/// Waits (bounded) for the writer to end by itself, else stops it.
fn stop_writer(mut writer: std::process::Child, within: Duration) {
    let deadline = Instant::now() + within;
    while writer.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = writer.kill();
            let _ = writer.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The acknowledged keys agent `a` does not return with their value at `consistency`.
fn missing(lab: &Lab, a: usize, consistency: &str, acked: &[String]) -> Vec<String> {
    let mut lost = Vec::new();
    for key in acked {
        let want = format!("v{}", &key[1..]);
        let (code, got) = kv(
            lab,
            a,
            &["get", "--consistency", consistency, "default", key],
        );
        if code != 0 || got != want {
            lost.push(format!("{key}: exit {code}, {got:?}"));
        }
    }
    lost
}

#[test]
fn killing_every_node_during_quorum_writes_loses_no_acknowledged_write() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    let (writer, acked_file) = write_stream(&lab);
    lab.wait_for(SECS(60), "100 writes acknowledged", |_| {
        lines(&acked_file).len() >= 100
    });
    for a in &agents {
        lab.kill9(*a);
    }
    // The client runs out of keys quickly once nothing answers; bound it anyway.
    stop_writer(writer, SECS(120));
    let acked = lines(&acked_file);
    assert!(
        acked.len() >= 100,
        "only {} writes acknowledged",
        acked.len()
    );
    for a in &agents {
        lab.restart(*a);
    }
    lab.wait_whole(&agents);
    let lost = missing(&lab, 0, "quorum", &acked);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost after kill -9 of every node: {:?}\n{}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)],
        lab.all_logs()
    );
}

#[test]
fn a_node_killed_during_quorum_writes_restarts_with_every_acknowledged_write() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    let (writer, acked_file) = write_stream(&lab);
    lab.wait_for(SECS(60), "100 writes acknowledged", |_| {
        lines(&acked_file).len() >= 100
    });
    let victim = agents[2];
    lab.kill9(victim);
    // Writes go on through the two others while it is down.
    lab.wait_for(SECS(60), "100 more writes acknowledged", |_| {
        lines(&acked_file).len() >= 200
    });
    stop_writer(writer, Duration::ZERO);
    let acked = lines(&acked_file);
    lab.restart(victim);
    lab.wait_whole(&agents);
    lab.wait_for(SECS(30), "the restarted node caught up", |l| {
        catch_up(l, victim).is_some_and(|c| c.is_null())
    });
    // Its own copy, read locally: what its log kept plus what catching up brought.
    let lost = missing(&lab, victim, "local", &acked);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes missing on the restarted node: {:?}\n{}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)],
        lab.all_logs()
    );
    let lost = missing(&lab, agents[1], "quorum", &acked);
    assert!(
        lost.is_empty(),
        "lost at quorum: {:?}",
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn a_damaged_log_stops_the_start_until_repair_and_peers_refill_it() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    for i in 0..20 {
        let (code, _) = kv(
            &lab,
            0,
            &["put", "default", &format!("d{i}"), &format!("v{i}")],
        );
        assert_eq!(code, 0);
    }
    let victim = agents[2];
    lab.terminate(victim);
    let dir = lab.agents[victim].data_dir.join("store");
    let mut segs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    let seg = segs.first().expect("a log segment").clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    assert!(bytes.len() > 200, "the segment holds the writes");
    // Inside the first record's payload: damage before the tail.
    bytes[10 + 12 + 5] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    lab.restart(victim);
    let status = lab
        .wait_exit(victim, SECS(20))
        .expect("an agent with a damaged log must not start");
    assert!(!status.success());
    let log = lab.log_of(victim);
    assert!(
        log.contains(&seg.display().to_string())
            && log.contains("at byte 10")
            && log.contains("--repair"),
        "the error must name the file, the offset and the way out:\n{log}"
    );

    lab.restart_with(victim, &["--repair"]);
    lab.wait_whole(&agents);
    lab.wait_for(SECS(30), "the repaired node holds every key again", |l| {
        (0..20).all(|i| {
            kv(
                l,
                victim,
                &["get", "--consistency", "local", "default", &format!("d{i}")],
            ) == (0, format!("v{i}"))
        })
    });
    assert!(lab.log_of(victim).contains("repair discarded the log"));
}

/// Runs `args` in lab host `host` and requires success; its stdout and stderr.
fn exec_ok(lab: &Lab, host: usize, args: &[&str]) -> (String, String) {
    let out = lab.exec(host, args);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?} failed: {so}{se}");
    (so, se)
}

/// `catch_up` of agent `a`'s `/v1/status` (`Null` once current), if it answers.
fn catch_up(lab: &Lab, a: usize) -> Option<serde_json::Value> {
    let s = lab.status(a)?;
    assert_eq!(
        s["catching_up"].as_bool(),
        Some(!s["catch_up"].is_null()),
        "catching_up and catch_up disagree: {s}"
    );
    Some(s["catch_up"].clone())
}

#[test]
fn a_node_that_lost_its_log_catches_up_from_a_quorum_before_it_votes_or_reads_fresh() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    let (n1, n2, n3) = (agents[0], agents[1], agents[2]);
    assert_eq!(kv(&lab, n1, &["put", "default", "c0", "v0"]).0, 0);
    lab.wait_for(SECS(20), "every node current after the first start", |l| {
        agents
            .iter()
            .all(|a| catch_up(l, *a).is_some_and(|c| c.is_null()))
    });
    // n3 stops; a write it misses; then its store directory is lost and n1 stops too.
    lab.terminate(n3);
    assert_eq!(kv(&lab, n1, &["put", "default", "c1", "v1"]).0, 0);
    std::fs::remove_dir_all(lab.agents[n3].data_dir.join("store")).unwrap();
    lab.terminate(n1);
    lab.restart(n3);
    let marker = lab.agents[n3].data_dir.join("store/CATCHING_UP");
    // With n2 it has quorum, but n2 alone cannot vouch for every acknowledged write.
    lab.wait_for(SECS(30), "n3 synced with n2 and still catching up", |l| {
        catch_up(l, n3).is_some_and(|c| c["synced_peers"] == 1)
    });
    let c = catch_up(&lab, n3).unwrap();
    assert_eq!(c["lost_writes"], true, "{c}");
    assert_eq!(
        (c["votes"].as_u64(), c["needed_votes"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(marker.exists(), "the marker must survive until caught up");
    let (code, out, err) = lab.kv(n3, &["get", "--consistency", "local", "default", "c1"]);
    assert_eq!((code, out.as_str()), (0, "v1"), "{err}");
    assert!(
        err.contains("stale read"),
        "a local read while catching up is stale: {err}"
    );
    // A backup from it says it may be incomplete.
    let backup = lab.dir().join("partial.snap").display().to_string();
    let (_, err) = exec_ok(
        &lab,
        lab.agents[n3].host,
        &[CHORUS, "snapshot", "save", &backup],
    );
    assert!(err.contains("warning: the node was catching up"), "{err}");
    // n3 abstains, so n2 cannot make a quorum read: better no answer than a wrong one.
    let (code, _, err) = lab.kv(n2, &["get", "--consistency", "quorum", "default", "c1"]);
    assert_ne!(
        code, 0,
        "a quorum read must not count the node that lost its log"
    );
    assert!(err.contains("indeterminate"), "{err}");
    // A crash now must not make the half-filled replica look whole: the marker says lost.
    lab.kill9(n3);
    lab.restart(n3);
    lab.wait_for(SECS(30), "n3 back, still catching up", |l| {
        catch_up(l, n3).is_some_and(|c| c["synced_peers"] == 1 && c["lost_writes"] == true)
    });
    // n1 returns: with n1 and n2 synced, n3 is current, votes, and its local reads are fresh.
    lab.restart(n1);
    lab.wait_whole(&agents);
    lab.wait_for(SECS(30), "n3 caught up", |l| {
        catch_up(l, n3).is_some_and(|c| c.is_null())
    });
    assert!(
        !marker.exists(),
        "the marker goes once the catch-up is on disk"
    );
    let (code, out, err) = lab.kv(n3, &["get", "--consistency", "local", "default", "c1"]);
    assert_eq!((code, out.as_str()), (0, "v1"), "{err}");
    assert!(!err.contains("stale"), "caught up, reads are fresh: {err}");
    lab.wait_for(SECS(30), "n1 (log intact) current again", |l| {
        catch_up(l, n1).is_some_and(|c| c.is_null())
    });
    assert_eq!(
        kv(
            &lab,
            n2,
            &["get", "--consistency", "quorum", "default", "c1"]
        ),
        (0, "v1".to_string())
    );
    let log = lab.log_of(n3);
    assert!(
        log.contains("may have lost acknowledged writes") && log.contains("caught up with peers"),
        "{log}"
    );
}

/// Records in every log file and snapshot of a store directory (an agent's, while it runs: a
/// file being written may end in a partial record, which is not counted).
fn records_on_disk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log" || x == "snap"))
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| store::wal::decode_file(&b).ok())
        .map(|d| d.records.len())
        .sum()
}

#[test]
fn snapshots_keep_the_log_proportional_to_the_live_data() {
    const EVERY: usize = 2_000;
    let mut lab = lab_or_skip!(3);
    let agents: Vec<usize> = (0..3)
        .map(|i| {
            let mut spec = AgentSpec::new(&format!("n{}", i + 1), 3);
            spec.extra_toml = format!("[store]\nsnapshot_min_records = {EVERY}\n");
            lab.start(i, spec)
        })
        .collect();
    lab.wait_whole(&agents);
    // 12,000 quorum writes over 100 keys: every node logs each one.
    let bench = [
        CHORUS,
        "bench",
        "--api",
        "127.0.0.1:7947",
        "--clients",
        "4",
        "--keys",
        "25",
        "--max-ops",
        "3000",
        "--duration",
        "120s",
    ];
    let (said, _) = exec_ok(&lab, 0, &bench);
    assert!(
        said.contains("(12000 ok, 0 errors"),
        "every write acknowledged: {said}"
    );
    for a in &agents {
        let dir = lab.agents[*a].data_dir.join("store");
        let held = records_on_disk(&dir);
        // A snapshot (the 100 live entries) and at most one period of records since it, plus
        // what the writer had queued when it was counted.
        assert!(
            held <= 100 + EVERY + 1_000,
            "{}: {held} records on disk after 12,000 writes of 100 keys",
            dir.display()
        );
        let snaps = || {
            std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "snap")
                })
                .count()
        };
        // A new snapshot is durable before the one it replaces is removed, so two may stand for
        // a moment right after the last write; once the writer is idle, one remains.
        lab.wait_for(SECS(10), "one snapshot remains", |_| snaps() == 1);
    }
    // What the snapshots and the remaining records hold reads back whole after kill -9.
    let digest = |l: &Lab, a: usize| {
        l.status(a)
            .map(|s| s["stores"]["default"].clone())
            .unwrap_or_default()
    };
    let before = digest(&lab, agents[2]);
    assert_eq!(before["entries"], 100, "{before}");
    lab.kill9(agents[2]);
    lab.restart(agents[2]);
    lab.wait_for(
        SECS(20),
        "the restarted node holds the same 100 entries",
        |l| digest(l, agents[2]) == before,
    );
}

/// Runs `chorus ARGS...` outside any namespace (file work only); exit code, stdout, stderr.
fn chorus(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CHORUS).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_backup_saved_from_a_running_node_restores_onto_an_empty_node() {
    let mut lab = lab_or_skip!(3);
    let agents = lab.start_cluster(3);
    for i in 0..30 {
        let (code, _) = kv(
            &lab,
            agents[0],
            &["put", "default", &format!("b{i}"), &format!("v{i}")],
        );
        assert_eq!(code, 0);
    }
    assert_eq!(kv(&lab, agents[1], &["del", "default", "b5"]).0, 0);
    let backup = lab.dir().join("backup.snap");
    let backup_s = backup.display().to_string();
    let (said, _) = exec_ok(&lab, 0, &[CHORUS, "snapshot", "save", &backup_s]);
    assert!(
        said.contains("saved 30 entries"),
        "29 values and a tombstone: {said}"
    );

    // A new single-node cluster on a fresh host, restored from the backup before its first start.
    let host = lab.add_extra_host();
    let data = lab.dir().join("data-r1");
    let data_s = data.display().to_string();
    let (code, out, err) = chorus(&["snapshot", "restore", &backup_s, "--data-dir", &data_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("restored 30 entries"), "{out}");
    let mut spec = AgentSpec::new("r1", 1);
    spec.cluster = "restored".into();
    spec.multicast = false;
    let r1 = lab.start(host, spec);
    lab.wait_for(SECS(20), "the restored node answers", |l| {
        kv(l, r1, &["get", "default", "b0"]) == (0, "v0".to_string())
    });
    for i in (0..30).filter(|i| *i != 5) {
        assert_eq!(
            kv(&lab, r1, &["get", "default", &format!("b{i}")]),
            (0, format!("v{i}"))
        );
    }
    assert_eq!(
        kv(&lab, r1, &["get", "default", "b5"]).0,
        3,
        "the delete is restored too"
    );

    // Not onto a running node, not onto a node that holds entries, not from a damaged file.
    let (code, _, err) = chorus(&["snapshot", "restore", &backup_s, "--data-dir", &data_s]);
    assert_ne!(code, 0);
    assert!(err.contains("stop the agent"), "{err}");
    lab.terminate(r1);
    let (code, _, err) = chorus(&["snapshot", "restore", &backup_s, "--data-dir", &data_s]);
    assert_ne!(code, 0);
    assert!(err.contains("already holds 30 entries"), "{err}");
    let mut bytes = std::fs::read(&backup).unwrap();
    bytes[40] ^= 0x01;
    let bad = lab.dir().join("bad.snap");
    std::fs::write(&bad, &bytes).unwrap();
    let empty = lab.dir().join("data-empty").display().to_string();
    let (code, _, err) = chorus(&[
        "snapshot",
        "restore",
        &bad.display().to_string(),
        "--data-dir",
        &empty,
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("is damaged at byte") && err.contains("nothing was restored"),
        "{err}"
    );
}

/// Unmounts a tmpfs the test mounted, even when the test fails.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_writes_clearly_loses_nothing_and_recovers_when_space_returns() {
    let mut lab = lab_or_skip!(3);
    // n3's data directory lives on a 4 MiB tmpfs the test fills up.
    let small = lab.dir().join("data-n3");
    std::fs::create_dir_all(&small).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot mount a tmpfs at {}", small.display());
    let _mount = Mount(small.clone());
    let agents = lab.start_cluster(3);
    let n3 = agents[2];
    let mut acked = Vec::new();
    let mut big_acked = Vec::new();
    for i in 0..10 {
        let key = format!("before{i}");
        assert_eq!(kv(&lab, n3, &["put", "default", &key, "v"]).0, 0);
        acked.push(key);
    }
    // Fill the disk.
    let filler = small.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=65536"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    // Writes coordinated by n3 now fail with a clear error (the first may still succeed on the
    // other two replicas' acknowledgements before n3 learns its log is stuck).
    // Values of 2 KB, so that the log needs new pages at once (the last one has some room).
    let big = "x".repeat(2048);
    let mut refused = None;
    for i in 0..50 {
        let key = format!("full{i}");
        let out = lab.exec(
            lab.agents[n3].host,
            &[CHORUS, "kv", "put", "default", &key, &big],
        );
        if out.status.success() {
            big_acked.push(key);
        } else {
            refused = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let df = Command::new("sh")
        .arg("-c")
        .arg(format!("df {0}; ls -laR {0}", small.display()))
        .output()
        .unwrap();
    let refused = refused.unwrap_or_else(|| {
        panic!(
            "a write through the full node must fail\n{}\n{}",
            String::from_utf8_lossy(&df.stdout),
            lab.log_of(n3)
        )
    });
    assert!(
        refused.contains("storage") && refused.contains("cannot write its log"),
        "unclear error: {refused}"
    );
    // The other nodes keep taking writes: n1 and n2 are a quorum.
    for i in 0..10 {
        let key = format!("elsewhere{i}");
        assert_eq!(kv(&lab, agents[0], &["put", "default", &key, "v"]).0, 0);
        acked.push(key);
    }
    // Space returns: n3 takes writes again within a bounded time.
    std::fs::remove_file(&filler).unwrap();
    lab.wait_for(SECS(20), "n3 takes writes again", |l| {
        kv(l, n3, &["put", "default", "after", "v"]).0 == 0
    });
    acked.push("after".into());
    // Its log is intact: a kill -9 and a restart read it back without complaint.
    lab.kill9(n3);
    lab.restart(n3);
    lab.wait_whole(&agents);
    assert!(
        !lab.log_of(n3).contains("damaged"),
        "the log was left damaged:\n{}",
        lab.log_of(n3)
    );
    // Peers reconnect their store streams to the restarted node (a new generation) at once; the
    // wait only bounds it.
    lab.wait_for(SECS(20), "quorum reads through the restarted n3", |l| {
        kv(
            l,
            n3,
            &["get", "--consistency", "quorum", "default", "after"],
        )
        .0 == 0
    });
    for (keys, value) in [(&acked, "v".to_string()), (&big_acked, big)] {
        for key in keys {
            for a in &agents {
                let got = kv(
                    &lab,
                    *a,
                    &["get", "--consistency", "quorum", "default", key],
                );
                assert_eq!(
                    got,
                    (0, value.clone()),
                    "acknowledged {key} lost (asked node {a})"
                );
            }
        }
    }
}
