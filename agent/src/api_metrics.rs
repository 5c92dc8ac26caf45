//! Latency histograms for `/metrics`: API requests by route, method and status; the store log's
//! writes and fsyncs.
//!
//! Recorded by a middleware around every route (the time to the answer's headers: for a stream,
//! the time to its start), kept in one process-wide histogram family that each scrape registers.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    /// The route as written (`/v1/kv/{store}/{*key}`), so keys do not make new series.
    route: String,
    method: String,
    status: String,
}

/// Latency histograms by a label set, all with the same buckets.
type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.25 ms to about 8 s, doubling: the buckets of every latency histogram the agent exports.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

static DURATIONS: LazyLock<Latencies<ApiLabel>> =
    LazyLock::new(|| Family::new_with_constructor(latency_histogram as fn() -> Histogram));

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabel {
    op: &'static str,
    outcome: &'static str,
}

static STORE: LazyLock<Latencies<StoreLabel>> =
    LazyLock::new(|| Family::new_with_constructor(latency_histogram as fn() -> Histogram));

/// Records a key/value request's time in the node, from its arrival to its reply (for a quorum
/// request, its quorum rounds), by `op` (read, write) and `outcome` (ok or the error code).
pub fn observe_store(op: &'static str, outcome: &'static str, took: std::time::Duration) {
    STORE
        .get_or_create(&StoreLabel { op, outcome })
        .observe(took.as_secs_f64());
}

/// Times a request (the middleware the router runs every request through).
pub async fn record(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    DURATIONS
        .get_or_create(&ApiLabel {
            route,
            method,
            status: resp.status().as_u16().to_string(),
        })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// Adds the latency histograms to a scrape's registry: API requests, log writes and fsyncs.
pub fn register(reg: &mut Registry) {
    reg.register(
        "api_request_duration_seconds",
        "HTTP API request durations (to the answer's headers), by route, method and status",
        DURATIONS.clone(),
    );
    reg.register(
        "store_request_seconds",
        "Key/value requests in the node, from arrival to reply (quorum rounds for quorum requests), by op and outcome",
        STORE.clone(),
    );
    reg.register(
        "log_write_seconds",
        "Store log: time to write one batch of records (before the fsync)",
        crate::wal_file::WRITE_SECONDS.clone(),
    );
    reg.register(
        "log_fsync_seconds",
        "Store log: time of each fsync",
        crate::wal_file::FSYNC_SECONDS.clone(),
    );
}
