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
fn check_warns_when_no_cluster_key_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nokey.toml");
    std::fs::write(&path, "[cluster]\nname = \"prod\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["agent", "--check", "--config"])
        .arg(&path)
        .env_remove("CHORUS_CLUSTER_KEY")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: no cluster.key"), "{err}");
    let with_key = dir.path().join("key.toml");
    std::fs::write(
        &with_key,
        "[cluster]\nname = \"prod\"\nkey = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["agent", "--check", "--config"])
        .arg(&with_key)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
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

/// Kills the wrapped agent when dropped, also when the test fails.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(dir: &std::path::Path, name: &str, config: &str) -> Running {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["agent", "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap();
    Running(child)
}

fn member_count(api: &str) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["members", "--json", "--api", api])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["members"].as_array().map(|m| m.len()))
        .unwrap_or(0)
}

#[test]
fn sighup_reload_applies_new_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let base = 21000 + (std::process::id() % 2000) as u16 * 4;
    let conf = |name: &str, gossip: u16, api: u16, seeds: &str| {
        format!(
            "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n[gossip]\nbind = \"127.0.0.1:{gossip}\"\n\
             [api]\nbind = \"127.0.0.1:{api}\"\n[discovery]\nseeds = [{seeds}]\n[cluster]\nexpected_nodes = 2\n",
            dir.path().join(name).display()
        )
    };
    let _b = agent(dir.path(), "b", &conf("b", base, base + 1, ""));
    let a = agent(dir.path(), "a", &conf("a", base + 2, base + 3, ""));
    let api_a = format!("127.0.0.1:{}", base + 3);
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait("agent a to answer", &|| member_count(&api_a) == 1);
    // Give a a seed pointing at b and reload: the two must meet.
    std::fs::write(
        dir.path().join("a.toml"),
        conf("a", base + 2, base + 3, &format!("\"127.0.0.1:{base}\"")),
    )
    .unwrap();
    let st = Command::new("kill")
        .args(["-HUP", &a.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    wait("a to see b after SIGHUP", &|| member_count(&api_a) == 2);
}

/// Runs a command; panics with its output when it fails.
fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_debian_package_installs_verifies_and_removes_cleanly() {
    let missing: Vec<&str> = [("cargo-deb", "--version"), ("dpkg", "--version")]
        .iter()
        .filter(|(c, a)| Command::new(c).arg(a).output().is_err())
        .map(|(c, _)| *c)
        .collect();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if !missing.is_empty() || !root {
        let reason = format!("installing a package needs root and {missing:?}");
        assert!(std::env::var("CHORUS_E2E_REQUIRE").is_err(), "{reason}");
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    // A leftover of an earlier run goes first (the package is this project's own).
    let _ = Command::new("dpkg").args(["--purge", "chorus"]).output();
    ok(Command::new(format!("{repo}/packaging/build-deb")).arg(env!("CARGO_BIN_EXE_chorus")));
    let deb = std::fs::read_dir(format!("{repo}/target/debian"))
        .expect("target/debian")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb");
    /// Purges the package when dropped, also when the test fails.
    struct Installed;
    impl Drop for Installed {
        fn drop(&mut self) {
            let _ = Command::new("dpkg").args(["--purge", "chorus"]).output();
        }
    }
    ok(Command::new("dpkg").arg("-i").arg(&deb));
    let _installed = Installed;
    // The unit verifies (as installed), the config it ships is valid, the docs are there.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/lib/systemd/system/chorus.service"])
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("chorus")).collect();
    assert!(verify.status.success() && ours.is_empty(), "{stderr}");
    let check = ok(Command::new("/usr/bin/chorus").args([
        "agent",
        "--check",
        "--config",
        "/etc/chorus/chorus.toml",
    ]));
    assert!(check.contains("configuration valid"), "{check}");
    for f in [
        "/usr/share/man/man1/chorus.1.gz",
        "/usr/share/bash-completion/completions/chorus",
        "/usr/share/zsh/vendor-completions/_chorus",
        "/usr/share/fish/vendor_completions.d/chorus.fish",
    ] {
        assert!(std::path::Path::new(f).exists(), "{f} not installed");
    }
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "chorus"]));
    assert!(conffiles.contains("/etc/chorus/chorus.toml"), "{conffiles}");
    ok(Command::new("dpkg").args(["--purge", "chorus"]));
    assert!(
        !std::path::Path::new("/usr/bin/chorus").exists(),
        "the binary stayed after a purge"
    );
    assert!(!std::path::Path::new("/etc/chorus/chorus.toml").exists());
}
