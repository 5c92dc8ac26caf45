//! Quorum by datacenters on real agents in network namespaces (issue 17).
//!
//! Each datacenter is a bridge of its own; the datacenters' bridges are joined to a WAN bridge by
//! links that carry unicast but not multicast (as routers between sites do), so the agents find
//! their own datacenter by multicast and the others through seeds. Cutting a datacenter off takes
//! its link down.

#[path = "support/mod.rs"]
mod support;

use serde_json::Value;
use std::time::Duration;
use support::{AgentSpec, Lab};

/// Starts one agent per host, `dcs[d]` in datacenter `dc{d+1}`, quorum by datacenters with each
/// datacenter's votes its number of hosts, and the first host of every datacenter as a seed.
fn start_datacenters(lab: &mut Lab, dcs: &[&[usize]]) -> Vec<usize> {
    lab.datacenters(dcs);
    let n: usize = dcs.iter().map(|d| d.len()).sum();
    let votes: Vec<String> = dcs
        .iter()
        .enumerate()
        .map(|(d, h)| format!("dc{} = {}", d + 1, h.len()))
        .collect();
    let seeds: Vec<String> = dcs
        .iter()
        .map(|h| format!("{}:7946", lab.ip(h[0])))
        .collect();
    let mut agents = vec![0; n];
    for (d, hosts) in dcs.iter().enumerate() {
        for h in *hosts {
            let mut spec = AgentSpec::new(&format!("n{}", h + 1), n as u32);
            spec.datacenter = Some(format!("dc{}", d + 1));
            spec.cluster_extra = "quorum_mode = \"datacenters\"\n".into();
            spec.extra_toml = format!("[cluster.datacenter_votes]\n{}\n", votes.join("\n"));
            spec.seeds = seeds.clone();
            agents[*h] = lab.start(*h, spec);
        }
    }
    lab.wait_whole(&agents);
    agents
}

fn put(lab: &Lab, a: usize, key: &str, value: &str) -> (i32, String) {
    let (code, _, err) = lab.kv(a, &["put", "default", key, value]);
    (code, err)
}

fn datacenters_of(status: &Value) -> Vec<(String, u64, bool)> {
    status["quorum"]["datacenters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or("").to_string(),
                d["reachable"].as_u64().unwrap_or(0),
                d["counted"] == true,
            )
        })
        .collect()
}

/// The scenario of both tests: `cut` (the hosts of one datacenter) is cut off; the others keep
/// writing, the cut one refuses with `no_quorum` naming the datacenters it reaches; after the heal
/// every node holds every write.
fn cut_one_datacenter(dcs: &[&[usize]], cut_dc: usize) {
    let n: usize = dcs.iter().map(|d| d.len()).sum();
    let mut lab = lab_or_skip!(n);
    let agents = start_datacenters(&mut lab, dcs);
    let st = lab.status(agents[0]).unwrap();
    assert_eq!(st["quorum"]["mode"], "datacenters", "{st}");
    assert_eq!(
        datacenters_of(&st).iter().filter(|d| d.2).count(),
        dcs.len(),
        "every datacenter reached: {st}"
    );
    assert_eq!(put(&lab, agents[0], "before", "1").0, 0);

    let cut = dcs[cut_dc];
    let rest: Vec<usize> = (0..n).filter(|i| !cut.contains(i)).collect();
    lab.dc_link(cut_dc, false);
    let name = format!("dc{}", cut_dc + 1);
    lab.wait_for(
        Duration::from_secs(15),
        "the cut datacenter loses quorum",
        |l| {
            cut.iter().all(|&h| {
                l.status(agents[h])
                    .is_some_and(|s| s["quorum"]["has_quorum"] == false)
            })
        },
    );
    // The cut datacenter refuses, naming what it reaches.
    let (code, err) = put(&lab, agents[cut[0]], "during-cut", "x");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no_quorum"), "{err}");
    assert!(
        err.contains(&format!(
            "reaches 1 of the 2 datacenters a quorum needs (of 3): {name}"
        )),
        "the refusal names the datacenter it reaches: {err}"
    );
    let st = lab.status(agents[cut[0]]).unwrap();
    let reached: Vec<String> = datacenters_of(&st)
        .into_iter()
        .filter(|d| d.2)
        .map(|d| d.0)
        .collect();
    assert_eq!(reached, vec![name.clone()], "{st}");
    let (code, text, _) = lab.cli(agents[cut[0]], "status", &[]);
    assert_eq!(code, 0);
    assert!(
        text.contains("1 of 3 datacenters reached, 2 required") && text.contains("(not reached)"),
        "{text}"
    );
    // The others write, through every one of their nodes.
    for (i, &h) in rest.iter().enumerate() {
        let (code, err) = put(&lab, agents[h], &format!("cut-{i}"), "y");
        assert_eq!(code, 0, "node n{} on the quorum side: {err}", h + 1);
    }
    lab.dc_link(cut_dc, true);
    lab.wait_whole(&agents);
    lab.wait_for(
        Duration::from_secs(30),
        "every node holds every write",
        |l| {
            agents.iter().all(|&a| {
                (0..rest.len()).all(|i| {
                    l.kv(
                        a,
                        &[
                            "get",
                            "--consistency",
                            "local",
                            "default",
                            &format!("cut-{i}"),
                        ],
                    )
                    .1
                    .trim()
                        == "y"
                })
            })
        },
    );
    for &a in &agents {
        let (code, _, _) = lab.kv(
            a,
            &["get", "--consistency", "local", "default", "during-cut"],
        );
        assert_eq!(code, 3, "the refused write took effect nowhere");
    }
}

#[test]
fn cutting_one_of_three_datacenters_off_leaves_the_other_two_writing() {
    cut_one_datacenter(&[&[0, 1], &[2, 3], &[4, 5]], 2);
}

#[test]
fn with_unequal_datacenters_the_two_small_ones_write_when_the_big_one_is_cut_off() {
    // dc1 holds 3 of the 5 votes: a count of votes would give it the quorum; by datacenters,
    // dc2 and dc3 (2 of 3 datacenters) hold it.
    cut_one_datacenter(&[&[0, 1, 2], &[3], &[4]], 0);
}
