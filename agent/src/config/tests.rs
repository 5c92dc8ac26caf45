//! Configuration tests: defaults, every key's errors, and the layering rule.

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_toml(text: &str) -> Result<Config, ConfigError> {
    let f = Config::parse_file(Path::new("test.toml"), text)?;
    Config::resolve(f, &env(&[]), &Overrides::default())
}

fn err_key(r: Result<Config, ConfigError>) -> String {
    match r {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid-value error, got {other:?}"),
    }
}

#[test]
fn bare_defaults_are_a_single_loopback_node() {
    let c = Config::resolve(FileConfig::default(), &env(&[]), &Overrides::default()).unwrap();
    assert_eq!(c.expected_nodes, 1);
    assert_eq!(c.quorum.required(), 1);
    assert!(c.gossip_bind.ip().is_loopback());
    assert!(c.api_bind.ip().is_loopback());
    assert!(c.multicast.is_none());
    assert!(!c.key_configured);
    assert_eq!(c.data_dir, PathBuf::from("chorus-data"));
}

#[test]
fn full_file_parses() {
    let c = from_toml(
        r#"
            [node]
            name = "web-1"
            datacenter = "fra"
            tags = { role = "web" }
            [gossip]
            bind = "0.0.0.0:7000"
            advertise = "10.1.2.3"
            profile = "wan"
            [discovery]
            multicast = true
            multicast_group = "239.1.2.3:9999"
            multicast_interface = "eth0"
            seeds = ["10.0.0.2:7946", "db.example:7946"]
            [cluster]
            name = "prod"
            key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
            expected_nodes = 5
            [api]
            bind = "127.0.0.1:9000"
            "#,
    )
    .unwrap();
    assert_eq!(c.name, "web-1");
    assert_eq!(c.gossip_advertise, Some("10.1.2.3:7000".parse().unwrap()));
    assert_eq!(c.profile, Profile::Wan);
    assert_eq!(
        c.multicast.as_ref().unwrap().group,
        "239.1.2.3:9999".parse().unwrap()
    );
    assert_eq!(c.quorum.required(), 3);
    assert!(c.key_configured);
    assert_eq!(c.seeds.len(), 2);
}

#[test]
fn errors_name_the_key() {
    assert_eq!(
        err_key(from_toml("[cluster]\nexpected_nodes = 0")),
        "cluster.expected_nodes"
    );
    assert_eq!(
        err_key(from_toml("[cluster]\nexpected_nodes = 3\nquorum = 4")),
        "cluster.quorum"
    );
    assert_eq!(
        err_key(from_toml("[cluster]\nkey = \"short\"")),
        "cluster.key"
    );
    assert_eq!(
        err_key(from_toml("[cluster]\nkey = \"AAEC\"")),
        "cluster.key"
    );
    assert_eq!(
        err_key(from_toml("[gossip]\nbind = \"nonsense\"")),
        "gossip.bind"
    );
    assert_eq!(
        err_key(from_toml("[gossip]\nprofile = \"fast\"")),
        "gossip.profile"
    );
    assert_eq!(
        err_key(from_toml("[discovery]\nmulticast_group = \"10.0.0.1:1\"")),
        "discovery.multicast_group"
    );
    assert_eq!(
        err_key(from_toml("[discovery]\nseeds = [\"nohost\"]")),
        "discovery.seeds"
    );
    assert_eq!(
        err_key(from_toml("[node]\nname = \"has space\"")),
        "node.name"
    );
    assert_eq!(err_key(from_toml("[api]\nbind = \"x\"")), "api.bind");
    assert_eq!(
        err_key(from_toml("[node]\ntags = { \"chorus.quorum\" = \"9/9\" }")),
        "node.tags",
        "the agent's own tags are reserved"
    );
    assert_eq!(err_key(from_toml("[log]\nlevel = \"[[[\"")), "log.level");
    assert_eq!(
        err_key(from_toml("[store]\nminority_reads = \"maybe\"")),
        "store.minority_reads"
    );
    assert_eq!(
        err_key(from_toml("[store]\nround_timeout = \"soon\"")),
        "store.round_timeout"
    );
    assert_eq!(
        err_key(from_toml("[store]\nmax_value_bytes = 0")),
        "store.max_value_bytes"
    );
    assert_eq!(
        err_key(from_toml("[store]\nsnapshot_min_records = 0")),
        "store.snapshot_min_records"
    );
    assert_eq!(
        err_key(from_toml("[stores.Bad]\nconsistency = \"quorum\"")),
        "stores.Bad"
    );
    assert_eq!(
        err_key(from_toml("[stores.fast]\nconsistency = \"eventual\"")),
        "stores.fast.consistency"
    );
}

#[test]
fn tags_must_fit_one_packet() {
    let ok = from_toml("[node]\ntags = { role = \"web\", rack = \"r1\" }").unwrap();
    assert_eq!(ok.tags.len(), 2);
    let big = format!(
        "[node]\ntags = {{ a = \"{}\", b = \"{}\", c = \"{}\" }}",
        "x".repeat(250),
        "y".repeat(250),
        "z".repeat(250)
    );
    assert_eq!(err_key(from_toml(&big)), "node.tags");
    let long_value = format!("[node]\ntags = {{ a = \"{}\" }}", "x".repeat(257));
    assert_eq!(err_key(from_toml(&long_value)), "node.tags");
}

#[test]
fn unknown_keys_and_wrong_types_are_rejected_with_the_key() {
    let e = from_toml("[cluster]\nexpected_nodez = 3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected_nodez"), "{e}");
    let e = from_toml("[cluster]\nexpected_nodes = \"three\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected_nodes"), "{e}");
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let f = Config::parse_file(
        Path::new("t"),
        "[cluster]\nexpected_nodes = 3\n[node]\nname = \"file\"",
    )
    .unwrap();
    let e = env(&[
        ("CHORUS_CLUSTER_EXPECTED_NODES", "5"),
        ("CHORUS_NODE_NAME", "env"),
    ]);
    let c = Config::resolve(f, &e, &Overrides::default()).unwrap();
    assert_eq!((c.expected_nodes, c.name.as_str()), (5, "env"));
    let f = Config::parse_file(Path::new("t"), "[cluster]\nexpected_nodes = 3").unwrap();
    let o = Overrides {
        expected_nodes: Some(7),
        name: Some("flag".into()),
        ..Default::default()
    };
    let c = Config::resolve(f, &e, &o).unwrap();
    assert_eq!((c.expected_nodes, c.name.as_str()), (7, "flag"));
    let bad = env(&[("CHORUS_CLUSTER_EXPECTED_NODES", "many")]);
    assert_eq!(
        err_key(Config::resolve(
            FileConfig::default(),
            &bad,
            &Overrides::default()
        )),
        "cluster.expected_nodes"
    );
}

#[test]
fn log_format_and_leader_keys_are_checked() {
    let c = from_toml(
        "[log]\nformat = \"json\"\n[leader]\ncandidate = true\nttl = \"5s\"\nlock_delay = \"0s\"\n",
    )
    .unwrap();
    assert!(c.log_json);
    let l = c.leader.expect("a candidate");
    assert_eq!(
        (l.ttl, l.lock_delay),
        (std::time::Duration::from_secs(5), std::time::Duration::ZERO)
    );
    assert_eq!(
        err_key(from_toml("[log]\nformat = \"xml\"\n")),
        "log.format"
    );
    assert_eq!(
        err_key(from_toml("[leader]\nttl = \"100ms\"\n")),
        "leader.ttl"
    );
    assert_eq!(
        err_key(from_toml(
            "[[handlers]]\nevents = [\"nope\"]\ncommand = [\"true\"]\n"
        )),
        "handlers[0].events"
    );
    assert_eq!(
        err_key(from_toml("[[handlers]]\nevents = [\"*\"]\ncommand = []\n")),
        "handlers[0].command"
    );
}

#[test]
fn keys_and_tokens_come_from_files_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    std::fs::write(dir.path().join("api-read"), "read-token-0123456789\n").unwrap();
    let text = format!(
        "[cluster]\nkey_file = {:?}\nkeys = [\"HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=\", \
         \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"]\n\
         [[api.tokens]]\nrole = \"read\"\ncredential = \"api-read\"\n",
        key_file.display().to_string()
    );
    let f = Config::parse_file(Path::new("test.toml"), &text).unwrap();
    let creds = env(&[("CREDENTIALS_DIRECTORY", &dir.path().display().to_string())]);
    let c = Config::resolve(f, &creds, &Overrides::default()).unwrap();
    assert!(c.key_configured);
    assert_eq!(c.key.bytes()[1], 1);
    assert_eq!(c.other_keys.len(), 1, "the primary is not repeated");
    assert_eq!(c.api_tokens.len(), 1);
    assert_eq!(c.api_tokens[0].secret.0, b"read-token-0123456789");
    assert!(
        !format!("{c:?}").contains("read-token"),
        "a token never shows in a Debug"
    );
    // Both ways of giving the key at once, a bad extra key, two entries with one token.
    let both = format!(
        "[cluster]\nkey = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\nkey_file = {:?}\n",
        key_file.display().to_string()
    );
    assert_eq!(err_key(from_toml(&both)), "cluster.key_file");
    assert_eq!(
        err_key(from_toml("[cluster]\nkeys = [\"AAEC\"]")),
        "cluster.keys[0]"
    );
    let twice = "[[api.tokens]]\nrole = \"read\"\ncredential = \"api-read\"\n\
         [[api.tokens]]\nrole = \"write\"\ncredential = \"api-read\"\n";
    let f = Config::parse_file(Path::new("test.toml"), twice).unwrap();
    match Config::resolve(f, &creds, &Overrides::default()) {
        Err(ConfigError::Invalid { key, message }) => {
            assert_eq!(key, "api.tokens[1]");
            assert!(message.contains("same token"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn quorum_by_datacenters_is_checked_against_the_node() {
    let ok = from_toml(
        "[node]\ndatacenter = \"fra\"\n[cluster]\nquorum_mode = \"datacenters\"\n\
         [cluster.datacenter_votes]\nfra = 3\nams = 1\nlon = 1\n",
    )
    .unwrap();
    let table = ok.quorum.datacenter_votes().unwrap();
    assert_eq!(table.len(), 3);
    assert_eq!(ok.quorum.tag(), "dc:ams=1,fra=3,lon=1");
    let s = ok.store_config();
    assert_eq!(s.my_datacenter, "fra");
    assert_eq!(s.datacenters.as_ref().map(|t| t.len()), Some(3));
    for (text, key) in [
        (
            "[node]\ndatacenter = \"par\"\n[cluster]\nquorum_mode = \"datacenters\"\n[cluster.datacenter_votes]\nfra = 1\n",
            "node.datacenter",
        ),
        (
            "[node]\ndatacenter = \"fra\"\nvotes = 2\n[cluster]\nquorum_mode = \"datacenters\"\n[cluster.datacenter_votes]\nfra = 1\n",
            "node.votes",
        ),
        (
            "[cluster]\nquorum_mode = \"datacenters\"\n",
            "cluster.datacenter_votes",
        ),
        (
            "[cluster]\nquorum_mode = \"datacenters\"\nquorum = 2\n[cluster.datacenter_votes]\ndc1 = 1\n",
            "cluster.quorum_mode",
        ),
        (
            "[cluster]\n[cluster.datacenter_votes]\ndc1 = 1\n",
            "cluster.datacenter_votes",
        ),
        (
            "[cluster]\nquorum_mode = \"sites\"\n",
            "cluster.quorum_mode",
        ),
        (
            "[cluster]\nquorum_mode = \"datacenters\"\n[cluster.datacenter_votes]\ndc1 = 0\n",
            "cluster.datacenter_votes",
        ),
    ] {
        assert_eq!(err_key(from_toml(text)), key, "{text}");
    }
}
