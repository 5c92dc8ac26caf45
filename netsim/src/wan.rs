//! Across datacenters: how quorum writes, failure detection and false failures move with the
//! latency between datacenters, with the LAN timings and with the timings fitted to the slowest
//! round trip (`gossip.max_rtt`, [`membership::Timings::fit_rtt`]).
//!
//! Six nodes in three datacenters (two each), one-way latency between datacenters drawn from
//! 0.8-1.2 times the nominal figure, 0.2-2 ms inside one. Per seed: three clients write with
//! quorum for 20 s (latency of every acknowledged write); then node 1 crashes and the time until
//! node 0, in the same datacenter, reports it failed is measured, and until every node does. A
//! second run per seed leaves the cluster idle for 60 s at 5 % datagram loss and counts failure
//! reports, every one of which is false.

use crate::history::Outcome;
use crate::sim::{Seen, Sim, SimConfig};
use crate::workload::WorkloadConfig;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What one latency and timing choice measured over its seeds.
#[derive(Debug, Clone)]
pub struct WanResult {
    /// Nominal one-way latency between datacenters.
    pub latency: Duration,
    /// Whether the timings were fitted to the round trip.
    pub fitted: bool,
    /// Quorum write latency, median and 99th percentile over every acknowledged write.
    pub write_p50: Duration,
    /// See `write_p50`.
    pub write_p99: Duration,
    /// Crash of a node to its datacenter neighbour reporting it failed: median over seeds.
    pub detect_lan: Option<Duration>,
    /// Crash to every node reporting it failed: median over seeds.
    pub detect_all: Option<Duration>,
    /// The slowest of those over seeds.
    pub detect_all_max: Option<Duration>,
    /// Failure reports in the idle runs at 5 % loss (all false), summed over seeds.
    pub false_failures: u64,
    /// Seeds run.
    pub seeds: usize,
}

/// The longest round trip the fitted timings are given for a nominal one-way latency.
pub fn fitted_rtt(latency: Duration) -> Duration {
    latency * 12 / 10 * 2 + Duration::from_millis(10)
}

fn config(latency: Duration, fitted: bool, seed: u64) -> SimConfig {
    let mut cfg = SimConfig::lan(6, seed);
    cfg.datacenters = 3;
    cfg.seed_node_zero = true;
    cfg.link.inter_dc = (latency * 8 / 10, latency * 12 / 10);
    cfg.max_rtt = fitted.then(|| fitted_rtt(latency));
    cfg
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

/// Measures one latency and timing choice over `seeds`.
pub fn run(latency: Duration, fitted: bool, seeds: std::ops::RangeInclusive<u64>) -> WanResult {
    let tick = Duration::from_millis(10);
    let mut writes = Vec::new();
    let (mut lan, mut all) = (Vec::new(), Vec::new());
    let mut false_failures = 0;
    let mut n_seeds = 0;
    for seed in seeds {
        n_seeds += 1;
        let mut cfg = config(latency, fitted, seed);
        cfg.store = true;
        let mut sim = Sim::new(cfg);
        sim.run_until_cond_every(Duration::from_secs(20), tick, |s| {
            s.all_running_alive_by_events()
        });
        sim.start_clients(WorkloadConfig {
            clients: 3,
            local_ppm: 0,
            read_ppm: 0,
            strong_ppm: 0,
            lock_clients: 0,
            ..WorkloadConfig::default()
        });
        sim.run_for(Duration::from_secs(20));
        for o in &sim.history().ops {
            if let (Outcome::Written(_), Some(done)) = (&o.outcome, o.completed) {
                writes.push(done - o.invoked);
            }
        }
        sim.stop_clients();
        sim.crash(1);
        let limit = Duration::from_secs(60);
        if let Some(t) =
            sim.run_until_cond_every(limit, tick, |s| s.seen_by_events(0, 1) == Seen::Failed)
        {
            lan.push(t);
            if let Some(rest) =
                sim.run_until_cond_every(limit, tick, |s| s.count_reporting(1, Seen::Failed) == 5)
            {
                all.push(t + rest);
            }
        }

        let mut cfg = config(latency, fitted, seed);
        cfg.link.loss_ppm = 50_000;
        let mut sim = Sim::new(cfg);
        sim.run_for(Duration::from_secs(70));
        false_failures += sim
            .log()
            .iter()
            .filter(|l| matches!(l.event, membership::Event::MemberFailed { .. }))
            .count() as u64;
    }
    writes.sort();
    let pct = |p: f64| {
        writes
            .get(((writes.len() as f64 * p) as usize).min(writes.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    WanResult {
        latency,
        fitted,
        write_p50: pct(0.5),
        write_p99: pct(0.99),
        detect_lan: median(lan),
        detect_all_max: all.iter().max().copied(),
        detect_all: median(all),
        false_failures,
        seeds: n_seeds,
    }
}

/// Draws write latency, detection and false failures against the latency between datacenters,
/// one line per timing choice, as SVG files in `dir`.
pub fn plot(results: &[WanResult], dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let series = |f: &dyn Fn(&WanResult) -> Option<f64>, fitted: bool| -> Vec<(f64, f64)> {
        results
            .iter()
            .filter(|r| r.fitted == fitted)
            .filter_map(|r| f(r).map(|v| (ms(r.latency), v)))
            .collect()
    };
    type Measure = Box<dyn Fn(&WanResult) -> Option<f64>>;
    let charts: Vec<(&str, &str, &str, Measure)> = vec![
        (
            "wan-writes.svg",
            "Quorum write latency, median",
            "milliseconds",
            Box::new(move |r: &WanResult| Some(ms(r.write_p50))),
        ),
        (
            "wan-detection.svg",
            "Crash of a node to every node reporting it failed, median",
            "seconds",
            Box::new(|r: &WanResult| r.detect_all.map(|d| d.as_secs_f64())),
        ),
        (
            "wan-false-failures.svg",
            "False failure reports, idle at 5 % loss (sum over seeds)",
            "reports",
            Box::new(|r: &WanResult| Some(r.false_failures as f64)),
        ),
    ];
    let mut written = Vec::new();
    for (file, title, unit, f) in charts {
        let path = dir.join(file);
        let lan = series(&*f, false);
        let fit = series(&*f, true);
        draw(&path, title, unit, &lan, &fit)
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn draw(
    path: &Path,
    title: &str,
    unit: &str,
    lan: &[(f64, f64)],
    fit: &[(f64, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    let x_max = lan.iter().chain(fit).map(|p| p.0).fold(10.0, f64::max) * 1.1;
    let y_max = lan.iter().chain(fit).map(|p| p.1).fold(0.0, f64::max) * 1.2;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("one-way latency between datacenters (ms)")
        .y_desc(unit)
        .draw()?;
    for (pts, color, label) in [(lan, BLUE, "LAN timings"), (fit, RED, "fitted timings")] {
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
