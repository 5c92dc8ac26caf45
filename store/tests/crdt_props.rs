//! Property tests: the entry join is commutative, associative and idempotent; any delivery order,
//! duplication or loss followed by anti-entropy converges; TTLs and tombstones behave.

use membership::NodeId;
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use store::hlc::Hlc;
use store::{Entry, StoreConfig, StoreCore, StoreMap, StoreMsg, Version};

const WALL: u64 = 1_800_000_000_000;

fn entry_strategy() -> impl Strategy<Value = (String, Entry)> {
    (
        0u8..6,
        0u64..50,
        1u64..4,
        proptest::option::of(0u8..4),
        proptest::option::of(0u64..100),
    )
        .prop_map(|(k, ts, node, val, ttl)| {
            let entry = Entry {
                version: Version {
                    ts: Hlc::pack(WALL / 1000 + ts, 0),
                    node: NodeId(node),
                },
                value: val.map(|v| vec![v]),
                expires_at: ttl.map(|t| WALL / 1000 + t),
            };
            (format!("k{k}"), entry)
        })
}

fn build(items: &[(String, Entry)]) -> StoreMap {
    let mut m = StoreMap::default();
    for (k, e) in items {
        m.apply(k, e.clone());
    }
    m
}

fn merge(a: &StoreMap, b: &StoreMap) -> StoreMap {
    let mut m = a.clone();
    for (k, e) in b.iter() {
        m.apply(k, e.to_entry());
    }
    m
}

/// A version is minted once, by one node, for one write: give every generated write its own
/// writer id so that equal versions never carry different content (which no real cluster makes).
fn realistic(items: Vec<(String, Entry)>) -> Vec<(String, Entry)> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, (k, mut e))| {
            e.version.node = NodeId(1000 + i as u64);
            (k, e)
        })
        .collect()
}

proptest! {
    #[test]
    fn join_is_commutative_associative_idempotent(
        a in proptest::collection::vec(entry_strategy(), 0..20),
        b in proptest::collection::vec(entry_strategy(), 0..20),
        c in proptest::collection::vec(entry_strategy(), 0..20),
    ) {
        let all = realistic([a.clone(), b.clone(), c.clone()].concat());
        let (a, rest) = all.split_at(a.len().min(all.len()));
        let (b, c) = rest.split_at(b.len().min(rest.len()));
        let (ma, mb, mc) = (build(a), build(b), build(c));
        prop_assert_eq!(merge(&ma, &mb), merge(&mb, &ma));
        prop_assert_eq!(merge(&merge(&ma, &mb), &mc), merge(&ma, &merge(&mb, &mc)));
        prop_assert_eq!(merge(&ma, &ma), ma.clone());
    }

    #[test]
    fn any_order_and_duplication_gives_the_same_replica(
        items in proptest::collection::vec(entry_strategy(), 0..40),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..80),
    ) {
        let items = realistic(items);
        let straight = build(&items);
        if items.is_empty() {
            return Ok(());
        }
        // Every item at least once, plus arbitrary repeats, in a shuffled order.
        let mut seq: Vec<(String, Entry)> = items.clone();
        for ix in &order {
            seq.push(items[ix.index(items.len())].clone());
        }
        seq.reverse();
        for (i, ix) in order.iter().enumerate() {
            let j = ix.index(seq.len());
            let n = seq.len();
            seq.swap(i % n, j);
        }
        prop_assert_eq!(build(&seq), straight);
    }

    #[test]
    fn visibility_follows_the_newest_write(items in proptest::collection::vec(entry_strategy(), 1..30), now in 0u64..120) {
        let items = realistic(items);
        let m = build(&items);
        let now_ms = WALL / 1000 + now;
        for (k, _) in &items {
            let newest = items.iter().filter(|(k2, _)| k2 == k).map(|(_, e)| e).max_by_key(|e| e.version).unwrap();
            let expect = match (&newest.value, newest.expires_at) {
                (None, _) => None,
                (Some(_), Some(exp)) if now_ms >= exp => None,
                (Some(v), _) => Some(v.clone()),
            };
            prop_assert_eq!(m.get(k).unwrap().visible(now_ms).map(|v| v.to_vec()), expect);
        }
    }

    #[test]
    fn lossy_pushes_then_anti_entropy_converge(
        items in proptest::collection::vec(entry_strategy(), 0..40),
        deliveries in proptest::collection::vec((0usize..3, any::<bool>(), any::<bool>()), 0..40),
    ) {
        let items = realistic(items);
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        // Tiny chunks, so that multi-message exchanges (and their key ranges) are exercised.
        let cfg = |chunk: usize| {
            let mut c = StoreConfig::new(2);
            c.sync_versions_per_message = chunk;
            c.sync_chunk_bytes = 300;
            c
        };
        let mut nodes: Vec<StoreCore> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| StoreCore::new(*id, cfg(1 + i * 2), i as u64, Duration::ZERO, WALL))
            .collect();
        // Each write is pushed to some replicas, maybe twice, maybe to none (loss).
        for (i, (k, e)) in items.iter().enumerate() {
            let (target, dup, lost) = deliveries.get(i).copied().unwrap_or((i % 3, false, false));
            if lost {
                continue;
            }
            let msg = StoreMsg::WriteReq { op: 0, store: "default".into(), key: k.clone(), entry: e.clone() };
            for _ in 0..if dup { 2 } else { 1 } {
                nodes[target].handle_message(Duration::ZERO, WALL, NodeId(9), msg.clone());
            }
        }
        let union = build(&items.iter().enumerate().filter(|(i, _)| !deliveries.get(*i).is_some_and(|d| d.2)).map(|(_, x)| x.clone()).collect::<Vec<_>>());
        // Anti-entropy: every node learns every other as a new peer, which starts a digest exchange.
        for (i, n) in nodes.iter_mut().enumerate() {
            let peers: BTreeMap<NodeId, u32> = ids.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, id)| (*id, 1)).collect();
            n.set_view(peers, true, 3);
        }
        let mut queue: VecDeque<(usize, usize, StoreMsg)> = VecDeque::new();
        let mut steps = 0;
        loop {
            for (i, n) in nodes.iter_mut().enumerate() {
                while let Some((to, m)) = n.poll_send() {
                    let j = ids.iter().position(|x| *x == to).unwrap();
                    queue.push_back((i, j, m));
                }
            }
            let Some((from, to, m)) = queue.pop_front() else { break };
            nodes[to].handle_message(Duration::ZERO, WALL, ids[from], m);
            steps += 1;
            prop_assert!(steps < 10_000, "anti-entropy did not quiesce");
        }
        let empty = StoreMap::default();
        for n in &nodes {
            prop_assert_eq!(n.replica().store("default").unwrap_or(&empty), &union);
        }
    }
}
