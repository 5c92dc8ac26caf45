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
fn bad_arguments_are_refused() {
    assert_eq!(run(&["run", "--scenario", "nosuch"]).0, 2);
    assert_eq!(run(&["run", "--scenario", "kill", "--nodes", "x"]).0, 2);
    assert_eq!(run(&["fly"]).0, 2);
}
