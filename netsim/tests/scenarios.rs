//! Every named scenario, over many seeds, passes every checker; and a run is a pure function of
//! its seed.
//!
//! `NETSIM_SEEDS` (default 200) sets how many seeds each scenario runs, from `NETSIM_SEED`
//! (default 1). A failure prints the command that replays it.

use netsim::scenario::{self, Faults, SCENARIOS};

fn seeds() -> std::ops::Range<u64> {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let base = env("NETSIM_SEED", 1);
    base..base + env("NETSIM_SEEDS", 200)
}

fn sweep(name: &str) {
    let mut failing = Vec::new();
    for seed in seeds() {
        let r = scenario::run(name, 5, seed, &Faults::default()).expect("scenario exists");
        if !r.ok() {
            let why: Vec<String> = r
                .failures()
                .iter()
                .map(|v| format!("{}: {}", v.name, v.detail))
                .collect();
            failing.push(format!(
                "seed {seed}: {}\n  replay: {}",
                why.join(" | "),
                r.replay_command()
            ));
        }
    }
    assert!(failing.is_empty(), "{name}:\n{}", failing.join("\n"));
}

macro_rules! sweeps {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                sweep($name);
            }
        )*

        #[test]
        fn every_listed_scenario_is_swept() {
            let swept = [$($name),*];
            for (name, _) in SCENARIOS {
                assert!(swept.contains(name), "scenario {name} has no sweep test");
            }
        }
    };
}

sweeps! {
    steady => "steady",
    wipe => "wipe",
    kill => "kill",
    leave => "leave",
    restart => "restart",
    kill_all => "kill-all",
    split => "split",
    even_split => "even-split",
    three_way => "three-way",
    bridge => "bridge",
    one_way => "one-way",
    shapes => "shapes",
    flapping => "flapping",
    loss10 => "loss10",
    loss30 => "loss30",
    chaos => "chaos",
    pauses => "pauses",
    skew => "skew",
    multi_dc => "multi-dc",
    dc_quorum => "dc-quorum",
}

#[test]
fn the_same_seed_gives_a_bit_identical_trace_and_another_seed_does_not() {
    for name in ["chaos", "split", "pauses", "skew"] {
        let a = scenario::run(name, 5, 42, &Faults::default()).unwrap();
        let b = scenario::run(name, 5, 42, &Faults::default()).unwrap();
        let c = scenario::run(name, 5, 43, &Faults::default()).unwrap();
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "{name}: same seed, different trace"
        );
        assert_eq!(
            a.render(),
            b.render(),
            "{name}: same seed, different report"
        );
        assert_ne!(
            a.trace_hash, c.trace_hash,
            "{name}: seeds 42 and 43 gave one trace"
        );
    }
}

#[test]
fn unknown_scenarios_and_tiny_clusters_are_refused() {
    let err = scenario::run("nosuch", 5, 1, &Faults::default()).unwrap_err();
    assert!(
        err.contains("unknown scenario") && err.contains("steady"),
        "{err}"
    );
    let err = scenario::run("steady", 2, 1, &Faults::default()).unwrap_err();
    assert!(err.contains("at least 3"), "{err}");
}

/// The sweeps above cover the agent's batching only if odd seeds really take inputs while
/// earlier ones' outputs wait (`SimConfig::batch_inputs`), and even seeds really do not.
#[test]
fn odd_seeds_take_inputs_in_batches_and_even_seeds_do_not() {
    let (odd, sim) = scenario::run_keeping("restart", 5, 7, &Faults::default()).expect("exists");
    assert!(odd.ok(), "{}", odd.render());
    assert!(
        sim.batched_inputs() > 1_000,
        "seed 7 batched only {} inputs",
        sim.batched_inputs()
    );
    let (even, sim) = scenario::run_keeping("restart", 5, 8, &Faults::default()).expect("exists");
    assert!(even.ok(), "{}", even.render());
    assert_eq!(sim.batched_inputs(), 0);
}
