//! Replays the packet fuzz corpus (`fuzz/corpus/packet`) through the fuzz target's function, so
//! CI runs every input the fuzzer kept without needing nightly. With `CHORUS_WRITE_CORPUS=1` it
//! (re)writes the seed inputs first: real payloads of every channel, captured from two cores
//! joining each other.

use membership::fuzz_datagram;
use membership::{Channel, Membership, MembershipConfig, NodeId, Peer, QuorumRule, Sealer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/packet")
}

fn peer(i: u8) -> Peer {
    Peer {
        addr: SocketAddr::from(([10, 0, 0, i], 7946)),
        id: NodeId(u64::from(i)),
        generation: 1,
    }
}

/// `[channel index] ++ payload` for datagrams two joining cores exchange (one per channel and
/// size), plus a few degenerate inputs.
fn seeds() -> Vec<Vec<u8>> {
    let mut cfg = MembershipConfig::single("fuzz");
    cfg.expected_nodes = 2;
    cfg.quorum = QuorumRule::majority(2).unwrap();
    cfg.beacons = true;
    let sealer = Sealer::new(&cfg.cluster, &cfg.key);
    let mut nodes = [
        Membership::new(cfg.clone(), peer(1), 1, Duration::ZERO),
        Membership::new(cfg, peer(2), 2, Duration::ZERO),
    ];
    nodes[0].announce_to(Duration::ZERO, peer(2).addr);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for ms in (0..3000u64).step_by(10) {
        let now = Duration::from_millis(ms);
        for k in 0..2 {
            nodes[k].handle_timeout(now);
            let mut sent = Vec::new();
            while let Some(tx) = nodes[k].poll_transmit() {
                sent.push(tx.bytes);
            }
            for bytes in sent {
                if let Ok(opened) = sealer.open(&bytes) {
                    let ch = Channel::ALL
                        .iter()
                        .position(|c| *c == opened.channel)
                        .unwrap() as u8;
                    let mut seed = vec![ch];
                    seed.extend_from_slice(&opened.payload);
                    if out.len() < 40
                        && !out.iter().any(|s| s.len() == seed.len() && s[0] == seed[0])
                    {
                        out.push(seed);
                    }
                }
                nodes[1 - k].handle_datagram(now, peer(k as u8 + 1).addr, &bytes);
            }
        }
    }
    out.push(vec![]);
    out.push(vec![0, 0xff, 0xff, 0xff]);
    out
}

#[test]
fn the_fuzz_corpus_replays_cleanly() {
    let dir = corpus();
    let seeds = seeds();
    let channels: std::collections::BTreeSet<u8> =
        seeds.iter().filter_map(|s| s.first().copied()).collect();
    assert!(channels.len() >= 3, "seeds cover channels {channels:?}");
    if std::env::var_os("CHORUS_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
        }
    }
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/packet exists") {
        fuzz_datagram(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 10, "the corpus holds only {n} inputs");
    for s in &seeds {
        fuzz_datagram(s);
    }
}
