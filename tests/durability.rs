//! End to end: the store's write-ahead log keeps every acknowledged write across `kill -9` of
//! every node, and a damaged log stops the start until `--repair`, after which peers refill it.

mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{AgentSpec, CHORUS, Lab};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn cluster(lab: &mut Lab, n: usize) -> Vec<usize> {
    let agents: Vec<usize> = (0..n)
        .map(|i| lab.start(i, AgentSpec::new(&format!("n{}", i + 1), n as u32)))
        .collect();
    wait_whole(lab, &agents);
    agents
}

fn wait_whole(lab: &Lab, agents: &[usize]) {
    let names: Vec<String> = (1..=agents.len()).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    lab.wait_for(SECS(20), "every node lists all alive", |l| {
        l.all_alive(agents, &refs)
    });
}

fn kv(lab: &Lab, a: usize, args: &[&str]) -> (i32, String) {
    let mut full = vec![CHORUS, "kv"];
    full.extend_from_slice(args);
    let out = lab.exec(lab.agents[a].host, &full);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
    )
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

#[test]
fn killing_every_node_during_quorum_writes_loses_no_acknowledged_write() {
    let mut lab = lab_or_skip!(3);
    let agents = cluster(&mut lab, 3);
    // A client in host 0 writes k1, k2, ... and prints each key whose put was acknowledged.
    let acked_file = lab.dir().join("acked");
    let script = format!(
        "i=0; while [ $i -lt 4000 ]; do i=$((i+1)); \
         if {CHORUS} kv put default k$i v$i >/dev/null 2>&1; then echo k$i; fi; done"
    );
    let mut writer = Command::new("ip")
        .args(["netns", "exec", lab.ns(0), "sh", "-c", &script])
        .stdout(std::fs::File::create(&acked_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.wait_for(SECS(60), "100 writes acknowledged", |_| {
        lines(&acked_file).len() >= 100
    });
    for a in &agents {
        lab.kill9(*a);
    }
    // The client runs out of keys quickly once nothing answers; bound it anyway.
    let deadline = Instant::now() + SECS(120);
    while writer.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = writer.kill();
            let _ = writer.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let acked = lines(&acked_file);
    assert!(
        acked.len() >= 100,
        "only {} writes acknowledged",
        acked.len()
    );
    for a in &agents {
        lab.restart(*a);
    }
    wait_whole(&lab, &agents);
    let mut lost = Vec::new();
    for key in &acked {
        let want = format!("v{}", &key[1..]);
        let (code, got) = kv(&lab, 0, &["get", "--consistency", "quorum", "default", key]);
        if code != 0 || got != want {
            lost.push(format!("{key}: exit {code}, {got:?}"));
        }
    }
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
fn a_damaged_log_stops_the_start_until_repair_and_peers_refill_it() {
    let mut lab = lab_or_skip!(3);
    let agents = cluster(&mut lab, 3);
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
    wait_whole(&lab, &agents);
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
