//! Watches: a blocking read of one key and a stream of a prefix's changes.
//!
//! - `GET /v1/kv/{store}/{key}?index=VERSION&wait=30s`: answers at once when the key's version
//!   differs from `VERSION`, else when it changes or `wait` (default 5 min, at most 10 min, plus
//!   up to 1/16 of random jitter) runs out, whichever comes first. Use the `Chorus-Version` of the
//!   previous answer as the next `index`; `index=0` waits for a key that does not exist yet.
//! - `GET /v1/watch/{store}?prefix=P`: Server-Sent Events of `key_changed` for the store's keys
//!   under `P` (resume with `Last-Event-ID`, as `/v1/events`).
//!
//! A watch is a hint: it wakes a client up. Decisions go through quorum reads, compare-and-set or
//! fencing tokens (a change can be missed between two blocking reads if it is overwritten; the
//! second read then sees the newer version).

use crate::api::ApiError;
use crate::driver::Handle;
use crate::events::Shared;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use node::EventKind;
use rand::TryRng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use store::{Consistency, Reply, Request, StoreError};
use tokio::time::Instant;

/// Longest `wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// `wait` when none is given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// The `wait` of a blocking read, checked.
pub fn wait_param(q: &BTreeMap<String, String>) -> Result<Duration, ApiError> {
    let Some(w) = q.get("wait") else {
        return Ok(DEFAULT_WAIT);
    };
    let d = humantime::parse_duration(w).map_err(|e| {
        ApiError::bad_request(format!("wait={w:?}: {e} (write e.g. 30s; at most 10m)"))
    })?;
    if d > MAX_WAIT {
        return Err(ApiError::bad_request(format!(
            "wait={w:?} is over the limit of 10m"
        )));
    }
    Ok(d)
}

/// A blocking read (see the module documentation); `read` runs one read of the key.
pub async fn blocking_get(
    h: &Handle,
    store: String,
    key: String,
    consistency: Option<Consistency>,
    index: &str,
    wait: Duration,
    answer: impl Fn(Result<Reply, StoreError>) -> Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    if index != "0" && index.parse::<store::Version>().is_err() {
        return Err(ApiError::bad_request(format!(
            "index={index:?} is not a version (take it from Chorus-Version) or 0"
        )));
    }
    let mut bytes = [0u8; 8];
    let _ = rand::rngs::SysRng.try_fill_bytes(&mut bytes);
    let span = (wait.as_millis() as u64 / 16).max(1);
    let jitter = Duration::from_millis(u64::from_le_bytes(bytes) % (span + 1));
    let deadline = Instant::now() + wait + jitter;
    // Subscribe before the first read, so a change between the two is not missed.
    let mut live = h.subscribe();
    loop {
        let req = Request::Get {
            store: store.clone(),
            key: key.clone(),
            consistency,
        };
        let r = h.kv(req).await?;
        let version = match &r {
            Ok(Reply::Value { version, .. }) => version.to_string(),
            Err(StoreError::NotFound { .. }) => "0".to_string(),
            _ => return answer(r),
        };
        if version != index {
            return answer(r);
        }
        // Wait for a change of this key, or the deadline.
        let changed = loop {
            match tokio::time::timeout_at(deadline, live.recv()).await {
                Err(_) => break false,
                Ok(Ok(v)) => {
                    if is_change_of(&v, &store, &key) {
                        break true;
                    }
                }
                // Lagged: something may have changed; read again.
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break true,
                Ok(Err(_)) => break false,
            }
        };
        if !changed {
            return answer(r);
        }
    }
}

fn is_change_of(v: &Shared, store: &str, key: &str) -> bool {
    matches!(&v.ev.kind, EventKind::KeyChanged { store: s, key: k, .. } if s == store && k == key)
}

/// `GET /v1/watch/{store}?prefix=P`.
pub async fn watch(
    State(h): State<Handle>,
    Path(store): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    store::limits::check_store_name(&store).map_err(ApiError::from)?;
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let live = h.subscribe();
    let backlog = crate::events_api::backlog(&h, &headers).await?;
    let keep: crate::events_api::Filter = Arc::new(move |v: &Shared| {
        matches!(&v.ev.kind, EventKind::KeyChanged { store: s, key, .. }
            if *s == store && key.starts_with(&prefix))
    });
    Ok(crate::events_api::stream(live, backlog, keep).into_response())
}
