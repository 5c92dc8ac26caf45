//! Prometheus exposition of the agent's counters.
//!
//! The core keeps plain counters; at each scrape they are copied into a fresh registry and encoded.
//! A scrape is rare and small, so rebuilding beats keeping two sets of counters in step.

use crate::driver::{MetricsReport, drops_by_reason};
use membership::{Channel, MemberState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// Renders `report` in the Prometheus text format.
pub fn render(report: &MetricsReport) -> String {
    let mut reg = Registry::with_prefix("chorus");

    let members = Family::<StateLabel, Gauge>::default();
    for s in MemberState::ALL {
        let n = report.members.get(&s).copied().unwrap_or(0);
        members
            .get_or_create(&StateLabel {
                state: s.name().into(),
            })
            .set(n as i64);
    }
    reg.register(
        "members",
        "Members this node knows, by state (itself included)",
        members,
    );

    let counter_family = |map: &std::collections::BTreeMap<Channel, u64>| {
        let f = Family::<ChannelLabel, Counter>::default();
        for c in Channel::ALL {
            let v = map.get(&c).copied().unwrap_or(0);
            f.get_or_create(&ChannelLabel {
                channel: c.name().into(),
            })
            .inc_by(v);
        }
        f
    };
    reg.register(
        "packets_sent",
        "Datagrams sent, by channel",
        counter_family(&report.stats.sent_packets),
    );
    reg.register(
        "bytes_sent",
        "UDP payload bytes sent, by channel",
        counter_family(&report.stats.sent_bytes),
    );
    reg.register(
        "packets_received",
        "Authenticated datagrams received, by channel",
        counter_family(&report.stats.recv_packets),
    );
    reg.register(
        "bytes_received",
        "Authenticated UDP payload bytes received, by channel",
        counter_family(&report.stats.recv_bytes),
    );

    let dropped = Family::<ReasonLabel, Counter>::default();
    for (r, v) in drops_by_reason(&report.stats) {
        dropped
            .get_or_create(&ReasonLabel {
                reason: r.name().into(),
            })
            .inc_by(v);
    }
    reg.register("packets_dropped", "Datagrams dropped, by reason", dropped);

    let send_errors = Counter::<u64>::default();
    send_errors.inc_by(report.send_errors);
    reg.register(
        "send_errors",
        "Datagrams the kernel refused to send",
        send_errors,
    );

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct KeyLabel {
        key: String,
        primary: String,
    }
    let opened = Family::<KeyLabel, Counter>::default();
    for k in &report.keys {
        opened
            .get_or_create(&KeyLabel {
                key: k.id.to_string(),
                primary: k.primary.to_string(),
            })
            .inc_by(k.opened);
    }
    reg.register(
        "packets_opened",
        "Datagrams and store frames opened, by cluster key id (an old key that opens nothing more is unused)",
        opened,
    );
    let by_reason = Family::<ReasonLabel, Counter>::default();
    for (r, v) in &report.store_rejected_by {
        by_reason
            .get_or_create(&ReasonLabel {
                reason: r.name().into(),
            })
            .inc_by(*v);
    }
    reg.register(
        "store_frames_dropped",
        "Store transport frames dropped, by reason (replay: a frame of another connection or out of sequence); the connection is closed",
        by_reason,
    );

    // One family per direction: a rate of "sent" and one of "received" are different things.
    let [sent, received, rejected, dropped] = report.store_frames;
    for (name, help, v) in [
        ("store_frames_sent", "Store transport frames sent", sent),
        (
            "store_frames_received",
            "Store transport frames received and opened",
            received,
        ),
        (
            "store_frames_rejected",
            "Store transport frames that failed to open (wrong key, corrupt); the connection is closed",
            rejected,
        ),
        (
            "store_messages_dropped",
            "Store messages dropped before sending: peer queue full (over 32 MiB) or unreachable, or held over 10 s for a peer without an address",
            dropped,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        reg.register(name, help, c);
    }
    let sync = report.sync;
    for (name, help, v) in [
        (
            "anti_entropy_rounds",
            "Anti-entropy rounds begun (digests sent; catch-up rounds included)",
            sync.rounds,
        ),
        (
            "anti_entropy_entries_sent",
            "Entries sent to peers that lacked them or held older versions",
            sync.entries_sent,
        ),
        (
            "anti_entropy_versions_sent",
            "(key, version) pairs listed to peers for comparison; near zero at rest, and under writes only the keys of leaves that differ",
            sync.versions_sent,
        ),
        (
            "anti_entropy_leaves_sent",
            "Leaf digests sent to narrow a differing bucket before listing its keys",
            sync.leaves_sent,
        ),
        (
            "anti_entropy_sent_bytes",
            "Key and value bytes of those entries",
            sync.bytes_sent,
        ),
        (
            "anti_entropy_keys_repaired",
            "Entries received by anti-entropy that changed this replica (it lacked them or held older)",
            sync.keys_repaired,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        reg.register(name, help, c);
    }
    let reconnects = Counter::<u64>::default();
    reconnects.inc_by(report.store_reconnects_stalled);
    reg.register(
        "store_reconnects_stalled",
        "Store connections replaced because they were stalled in TCP retransmission (a link a partition cut)",
        reconnects,
    );
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct StoreLabel {
        store: String,
    }
    let entries = Family::<StoreLabel, Gauge>::default();
    for (store, n) in &report.entries_by_store {
        entries
            .get_or_create(&StoreLabel {
                store: store.clone(),
            })
            .set(*n as i64);
    }
    reg.register(
        "store_entries",
        "Entries held, by store (tombstones included)",
        entries,
    );
    for (name, help, v) in [
        (
            "catching_up",
            "1 while this node catches up after a start (its local reads are stale), else 0",
            report.catching_up,
        ),
        (
            "leading",
            "1 while this node leads the cluster, else 0",
            report.leading,
        ),
        (
            "storage_failed",
            "1 while the store log cannot be written (the node takes no writes), else 0",
            report.storage_failed,
        ),
    ] {
        let g = Gauge::<i64>::default();
        g.set(i64::from(v));
        reg.register(name, help, g);
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct BuildLabel {
        version: String,
    }
    let build = Family::<BuildLabel, Gauge>::default();
    build
        .get_or_create(&BuildLabel {
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .set(1);
    reg.register("build_info", "The agent's version (always 1)", build);
    crate::api_metrics::register(&mut reg);
    process(&mut reg);
    let in_flight = Gauge::<i64>::default();
    in_flight.set(report.store_in_flight as i64);
    reg.register(
        "store_in_flight",
        "Quorum operations waiting for answers",
        in_flight,
    );

    let q = &report.quorum;
    let has = Gauge::<i64>::default();
    has.set(i64::from(q.has_quorum));
    reg.register(
        "quorum",
        "1 when this node reaches a quorum of votes, else 0",
        has,
    );
    let reachable = Gauge::<i64>::default();
    reachable.set(i64::from(q.reachable_votes));
    reg.register(
        "quorum_reachable_votes",
        "Votes this node can reach (its own included)",
        reachable,
    );
    let required = Gauge::<i64>::default();
    required.set(i64::from(q.required_votes));
    reg.register("quorum_required_votes", "Votes a quorum needs", required);

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct TypeLabel {
        r#type: String,
    }
    let events = Family::<TypeLabel, Counter>::default();
    for t in node::EVENT_TYPES {
        events
            .get_or_create(&TypeLabel {
                r#type: (*t).into(),
            })
            .inc_by(report.events.get(t).copied().unwrap_or(0));
    }
    reg.register("events", "Events emitted, by type", events);
    let subscribers = Gauge::<i64>::default();
    subscribers.set(report.subscribers as i64);
    reg.register(
        "event_subscribers",
        "Live event subscribers: streams, watches, blocking reads, and the handler runner",
        subscribers,
    );
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct OutcomeLabel {
        outcome: String,
    }
    let runs = Family::<OutcomeLabel, Counter>::default();
    use std::sync::atomic::Ordering::Relaxed;
    for (name, n) in crate::handlers::OUTCOMES.iter().zip(&crate::handlers::RUNS) {
        runs.get_or_create(&OutcomeLabel {
            outcome: (*name).into(),
        })
        .inc_by(n.load(Relaxed));
    }
    runs.get_or_create(&OutcomeLabel {
        outcome: "dropped".into(),
    })
    .inc_by(crate::handlers::DROPPED.load(Relaxed));
    reg.register(
        "handler_runs",
        "Event handler runs, by outcome (ok, failed, timeout, not_started, dropped)",
        runs,
    );
    let run_secs = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    run_secs.inc_by(crate::handlers::RUN_MS.load(Relaxed) as f64 / 1000.0);
    reg.register(
        "handler_run_seconds",
        "Time spent in finished event handler runs",
        run_secs,
    );

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)
        .expect("writing to a String cannot fail");
    out
}

/// The standard process metrics (`chorus_process_*`), from `/proc/self`: CPU time, resident
/// memory, open file descriptors, start time.
fn process(reg: &mut Registry) {
    let page = 4096.0; // resident pages to bytes (x86_64 and aarch64 Linux)
    let ticks = 100.0; // USER_HZ
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|i| stat[i + 2..].split_whitespace().collect())
        .unwrap_or_default();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Counting from the field after the command name: utime 11, stime 12, starttime 19, rss 21.
    let cpu = (num(11) + num(12)) / ticks;
    let rss = num(21) * page;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let start = boot + num(19) / ticks;
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as f64;
    let sub = reg.sub_registry_with_prefix("process");
    let cpu_c = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    cpu_c.inc_by(cpu);
    sub.register(
        "cpu_seconds",
        "User and system CPU time of the agent",
        cpu_c,
    );
    for (name, help, v) in [
        ("resident_memory_bytes", "Resident memory of the agent", rss),
        (
            "start_time_seconds",
            "When the agent started, in seconds since the epoch",
            start,
        ),
        ("open_fds", "Open file descriptors of the agent", fds),
    ] {
        let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        g.set(v);
        sub.register(name, help, g);
    }
}

/// The classic Prometheus text format (version 0.0.4) of an OpenMetrics `text`: a counter's
/// family is named after its samples (`x_total`, where OpenMetrics names it `x`), and the
/// OpenMetrics-only lines (`# UNIT`, `# EOF`) go. Without this, a classic parser reads every
/// counter family as empty and its samples as untyped.
pub fn classic(text: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod classic_tests {
    use super::classic;

    #[test]
    fn counters_are_named_after_their_samples_and_openmetrics_lines_go() {
        let om = "# HELP chorus_x Things.\n# TYPE chorus_x counter\nchorus_x_total{a=\"b\"} 3\n\
                  # HELP chorus_g Level.\n# TYPE chorus_g gauge\nchorus_g 1\n# UNIT chorus_g bytes\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP chorus_x_total Things.\n# TYPE chorus_x_total counter\nchorus_x_total{a=\"b\"} 3\n\
             # HELP chorus_g Level.\n# TYPE chorus_g gauge\nchorus_g 1\n"
        );
    }
}
