//! The `netsim run` command replays a scenario from its seed and reports verdicts.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netsim"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_scenario_runs_passes_and_replays_identically() {
    let args = ["run", "--scenario", "split", "--nodes", "5", "--seed", "7"];
    let (code, first) = run(&args);
    assert_eq!(code, 0, "{first}");
    assert!(
        first.contains("[pass] minority nodes lose quorum")
            && first.contains("[pass] merged after heal")
            && first.contains("[pass] quorum operations linearizable"),
        "{first}"
    );
    let (_, second) = run(&args);
    assert_eq!(first, second, "the same seed gave a different report");
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["sweep", "--help"],
        &["scale", "--help"],
        &["list", "--help"],
    ] {
        let (code, out) = run(args);
        assert_eq!(code, 0, "{args:?}: {out}");
        assert!(out.contains("Usage: netsim"), "{args:?}: {out}");
    }
    let (_, run_help) = run(&["run", "--help"]);
    assert!(
        run_help.contains("kill-all") && run_help.contains("store:skip-catch-up"),
        "scenarios and faults are listed: {run_help}"
    );
}

#[test]
fn a_faulty_run_replays_with_its_faults() {
    let args = [
        "run",
        "--scenario",
        "steady",
        "--nodes",
        "3",
        "--seed",
        "2",
        "--fault",
        "store:ack-before-durable",
    ];
    let (_, out) = run(&args);
    assert!(
        out.contains("replay: netsim run --scenario steady --nodes 3 --seed 2 --fault store:ack-before-durable"),
        "{out}"
    );
}

#[test]
fn bad_arguments_are_refused() {
    assert_eq!(run(&["run", "--scenario", "nosuch"]).0, 2);
    assert_eq!(run(&["run", "--scenario", "kill", "--nodes", "x"]).0, 2);
    assert_eq!(run(&["fly"]).0, 2);
    assert_eq!(
        run(&["run", "--scenario", "kill", "--fault", "nosuch"]).0,
        2
    );
    assert_eq!(run(&["sweep", "--scenario", "all", "--seeds", "5..1"]).0, 2);
}
