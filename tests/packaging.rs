//! The packaged systemd unit and example config are valid.

use std::process::Command;

#[test]
fn systemd_unit_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        if std::env::var("CHORUS_E2E_REQUIRE").as_deref() == Ok("1") {
            panic!("systemd-analyze is not installed but CHORUS_E2E_REQUIRE=1");
        }
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    assert!(out.status.success());
    // Verify a copy whose ExecStart points at the binary just built (verify checks it exists).
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/chorus.service"
    ))
    .unwrap();
    let unit = unit.replace("/usr/bin/chorus", env!("CARGO_BIN_EXE_chorus"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chorus.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Warnings about other units on this machine are not ours; anything naming our unit is.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("chorus.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn example_config_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args([
            "agent",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/chorus.toml"),
            "--check",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn invalid_config_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[cluster]\nexpected_nodes = 3\nquorum = 7\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["agent", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster.quorum"), "{err}");
}
