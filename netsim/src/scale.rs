//! Membership at scale: how failure detection, dissemination and traffic grow with the cluster.
//!
//! Nodes join through one seed (node 0; multicast does not span thousands of hosts), run idle,
//! then one node crashes. Detection time is from the crash to the first node reporting it failed;
//! dissemination time is from that first report to the last running node's report. Traffic is the
//! sealed datagram payload per node per second over the idle window before the crash.

use crate::sim::{Seen, Sim, SimConfig};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one scale run measured.
#[derive(Debug, Clone)]
pub struct ScaleResult {
    /// Cluster size.
    pub nodes: usize,
    /// Virtual time from the last node's start until every node's events listed every other
    /// node alive.
    pub join: Option<Duration>,
    /// Virtual time simulated before the crash.
    pub base: Duration,
    /// Wall time it took to simulate `base`.
    pub wall_base: Duration,
    /// Crash to first failure report.
    pub detect_first: Option<Duration>,
    /// First failure report to the last.
    pub disseminate: Option<Duration>,
    /// Sealed datagram bytes per node per second over the idle window.
    pub bytes_per_node_sec: f64,
    /// Datagrams per node per second over the idle window.
    pub datagrams_per_node_sec: f64,
    /// Datagrams each node sent, on average, from its start until the join was complete (or
    /// until `base` if it never was): the join's total work divided by the cluster size.
    pub join_datagrams_per_node: f64,
    /// The same datagrams by channel (SWIM, metadata, ...), per node.
    pub join_datagrams_by_channel: Vec<(membership::Channel, f64)>,
    /// Resident memory of the whole process with the cluster simulated, at the end of the run,
    /// in bytes (Linux `/proc/self/status` VmRSS; `None` elsewhere).
    pub resident_bytes: Option<u64>,
}

/// The process's resident memory now, from `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory per pair of nodes at the join's peak, rounded up from what was measured
/// for the largest clusters (`/usr/bin/time` of `netsim scale`: 268 bytes at 3,000 nodes and 223
/// at 10,000, where each node's bounded queues weigh less per pair; docs/netsim.md, "Limits").
/// Used only to warn before a run that cannot fit.
pub const PEAK_BYTES_PER_PAIR: u64 = 240;

/// The resident memory a run of `nodes` nodes needs at the join's peak, about.
pub fn peak_estimate(nodes: usize) -> u64 {
    (nodes as u64)
        .saturating_mul(nodes as u64)
        .saturating_mul(PEAK_BYTES_PER_PAIR)
}

/// Memory the kernel says is available to a new process (`MemAvailable` in `/proc/meminfo`;
/// `None` elsewhere).
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The warning to give before running `sizes` on a host with `available` bytes free, if the
/// largest cannot fit.
pub fn memory_warning(sizes: &[usize], available: u64) -> Option<String> {
    let largest = *sizes.iter().max()?;
    let need = peak_estimate(largest);
    (need > available).then(|| {
        format!(
            "{largest} nodes need about {:.1} GB at the join's peak ({PEAK_BYTES_PER_PAIR} bytes \
             per pair of nodes, docs/netsim.md \"Limits\"); this host has {:.1} GB available, so \
             that run will probably be killed for memory",
            need as f64 / 1e9,
            available as f64 / 1e9,
        )
    })
}

/// Runs `nodes` nodes for `base` of virtual time, then crashes one and measures.
pub fn run(nodes: usize, seed: u64, base: Duration, start_spread: Duration) -> ScaleResult {
    let mut cfg = SimConfig::lan_through_a_seed(nodes, seed);
    cfg.start_spread = start_spread;
    cfg.event_log = false;
    let started = Instant::now();
    let mut sim = Sim::new(cfg);
    let every = Duration::from_millis(100);
    sim.run_until(start_spread);
    let join = sim.run_until_cond_every(base.saturating_sub(start_spread), every, |s| {
        s.running().len() == nodes && s.all_running_alive_by_events()
    });
    let join_datagrams_per_node = sim.sent().0 as f64 / nodes as f64;
    let mut by_channel = std::collections::BTreeMap::new();
    for i in sim.running() {
        if let Some(core) = sim.core(i) {
            for (channel, n) in &core.stats().sent_packets {
                *by_channel.entry(*channel).or_insert(0u64) += n;
            }
        }
    }
    let join_datagrams_by_channel = by_channel
        .into_iter()
        .map(|(c, n)| (c, n as f64 / nodes as f64))
        .collect();
    // The idle window is the last third of the base period (or what is left after the join).
    let window_start = sim.now().max(base * 2 / 3);
    sim.run_until(window_start);
    let (p0, b0) = sim.sent();
    sim.run_until(base.max(window_start + Duration::from_secs(1)));
    let (p1, b1) = sim.sent();
    let wall_base = started.elapsed();
    let span = (sim.now() - window_start).as_secs_f64() * nodes as f64;
    let victim = nodes - 1;
    sim.crash(victim);
    let tick = Duration::from_millis(10);
    let limit = Duration::from_secs(60);
    let detect_first =
        sim.run_until_cond_every(limit, tick, |s| s.count_reporting(victim, Seen::Failed) > 0);
    let others = nodes - 1;
    let disseminate = detect_first.and_then(|_| {
        sim.run_until_cond_every(limit, tick, |s| {
            s.count_reporting(victim, Seen::Failed) == others
        })
    });
    ScaleResult {
        nodes,
        join,
        base,
        wall_base,
        detect_first,
        disseminate,
        bytes_per_node_sec: (b1 - b0) as f64 / span,
        datagrams_per_node_sec: (p1 - p0) as f64 / span,
        join_datagrams_per_node,
        join_datagrams_by_channel,
        resident_bytes: resident_bytes(),
    }
}

/// A chart: file name, title, unit, and a value (if measured) per cluster size.
type Chart = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(usize, Option<f64>)>,
);

/// Draws detection, dissemination and traffic against cluster size as SVG files in `dir`.
pub fn plot(results: &[ScaleResult], dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let charts: [Chart; 6] = [
        (
            "detection.svg",
            "Failure detection: crash to first report",
            "seconds",
            results
                .iter()
                .map(|r| (r.nodes, secs(r.detect_first)))
                .collect(),
        ),
        (
            "dissemination.svg",
            "Dissemination: first report to every node",
            "seconds",
            results
                .iter()
                .map(|r| (r.nodes, secs(r.disseminate)))
                .collect(),
        ),
        (
            "traffic.svg",
            "Idle traffic per node (dashed: c * log10 N through the first point)",
            "bytes per node per second",
            results
                .iter()
                .map(|r| (r.nodes, Some(r.bytes_per_node_sec)))
                .collect(),
        ),
        (
            "join-work.svg",
            "Join: datagrams sent per node until every node lists every node",
            "datagrams per node",
            results
                .iter()
                .map(|r| (r.nodes, Some(r.join_datagrams_per_node)))
                .collect(),
        ),
        (
            "wall.svg",
            "Wall time to simulate the base period (scaled to 60 simulated s)",
            "seconds",
            results
                .iter()
                .map(|r| {
                    let scale = 60.0 / r.base.as_secs_f64();
                    (r.nodes, Some(r.wall_base.as_secs_f64() * scale))
                })
                .collect(),
        ),
        (
            "memory.svg",
            "Resident memory of the simulation",
            "MB",
            results
                .iter()
                .map(|r| (r.nodes, r.resident_bytes.map(|b| b as f64 / 1e6)))
                .collect(),
        ),
    ];
    let mut written = Vec::new();
    for (file, title, unit, points) in charts {
        let path = dir.join(file);
        draw(&path, title, unit, &points, file == "traffic.svg")
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn draw(
    path: &Path,
    title: &str,
    unit: &str,
    points: &[(usize, Option<f64>)],
    log_reference: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|(n, v)| v.map(|v| ((*n as f64).log10(), v)))
        .collect();
    let x_max = pts.iter().map(|p| p.0).fold(1.0, f64::max).ceil().max(1.0);
    let mut y_max = pts.iter().map(|p| p.1).fold(0.0, f64::max);
    let reference: Vec<(f64, f64)> = match (log_reference, pts.first()) {
        (true, Some((x0, y0))) if *x0 > 0.0 => (0..=(x_max * 10.0) as usize)
            .map(|i| i as f64 / 10.0)
            .filter(|x| *x >= *x0)
            .map(|x| (x, y0 * x / x0))
            .collect(),
        _ => vec![],
    };
    y_max = reference.iter().map(|p| p.1).fold(y_max, f64::max) * 1.15;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..x_max + 0.2, 0f64..y_max.max(0.001))?;
    chart
        .configure_mesh()
        .x_desc("cluster size (nodes, log scale)")
        .y_desc(unit)
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| format!("{:.0}", 10f64.powf(*x)))
        .draw()?;
    chart.draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))?;
    chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
    if !reference.is_empty() {
        chart.draw_series(DashedLineSeries::new(reference, 6, 4, RED.stroke_width(1)))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10,000 nodes do not fit in this project's 24 GB machine (about 40 GB at 400 bytes per
    /// pair); 1,000 nodes (about 0.4 GB) fit anywhere this runs. The largest size decides.
    #[test]
    fn a_size_that_cannot_fit_is_warned_of_before_it_runs() {
        let gb = 1_000_000_000;
        let warning = memory_warning(&[1000, 20_000, 300], 24 * gb).expect("warned");
        assert!(
            warning.contains("20000 nodes need about 96.0 GB"),
            "{warning}"
        );
        assert!(warning.contains("24.0 GB available"), "{warning}");
        assert_eq!(memory_warning(&[10, 1000], 24 * gb), None);
        // 10,000 nodes fit this project's machine (24.8 GB available when idle).
        assert_eq!(memory_warning(&[10_000], 24_800_000_000), None);
        assert_eq!(memory_warning(&[], 0), None);
        assert!(memory_warning(&[1000], gb / 10).is_some());
    }
}
