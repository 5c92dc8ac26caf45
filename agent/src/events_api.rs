//! `GET /v1/events`: the event stream.
//!
//! - As Server-Sent Events (the default): `id:` is the event's sequence number, `event:` its type,
//!   `data:` its JSON. A client that reconnects with `Last-Event-ID` gets what it missed from a
//!   buffer of the last 10,000 events; when some are gone (or the agent restarted, which starts
//!   the numbers again), it first gets an event of type `gap` with `missed_from` and `missed_to`,
//!   never silence. A comment line every 15 s keeps idle connections open.
//! - `?since=SEQ`: the buffered events after `SEQ` as one JSON answer, for scripts.
//! - `?type=member_failed,quorum_lost`: only those types (an unknown type is a `bad_request`).

use crate::api::ApiError;
use crate::driver::Handle;
use crate::events::Shared;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

fn types(q: &BTreeMap<String, String>) -> Result<Option<BTreeSet<String>>, ApiError> {
    let Some(list) = q.get("type") else {
        return Ok(None);
    };
    let mut set = BTreeSet::new();
    for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !node::EVENT_TYPES.contains(&t) {
            return Err(ApiError::bad_request(format!(
                "type={t:?} is not an event type; known: {}",
                node::EVENT_TYPES.join(", ")
            )));
        }
        set.insert(t.to_string());
    }
    Ok(Some(set))
}

fn seq_param(name: &str, v: &str) -> Result<u64, ApiError> {
    v.trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{name} {v:?} is not an event sequence number")))
}

fn wanted(filter: &Option<BTreeSet<String>>, v: &Shared) -> bool {
    filter.as_ref().is_none_or(|f| f.contains(v.type_name()))
}

fn gap(from: u64, to: u64) -> Value {
    json!({ "type": "gap", "missed_from": from, "missed_to": to })
}

fn sse(v: &Value) -> Event {
    let mut e = Event::default()
        .event(v["type"].as_str().unwrap_or("event"))
        .data(v.to_string());
    if let Some(seq) = v["seq"].as_u64() {
        e = e.id(seq.to_string());
    }
    e
}

/// `GET /v1/events`.
pub async fn events(
    State(h): State<Handle>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let filter = types(&q)?;
    if let Some(since) = q.get("since") {
        let since = seq_param("since", since)?;
        let b = h.events_since(since).await?;
        let mut out: Vec<Value> = Vec::new();
        if let Some((from, to)) = b.gap {
            out.push(gap(from, to));
        }
        out.extend(
            b.events
                .iter()
                .filter(|v| wanted(&filter, v))
                .map(|v| v.json().clone()),
        );
        return Ok(Json(json!({ "events": out, "last_seq": b.last_seq })).into_response());
    }
    // Subscribe before reading the backlog, so nothing falls between the two.
    let live = h.subscribe();
    let backlog = backlog(&h, &headers).await?;
    let keep: Filter = Arc::new(move |v: &Shared| wanted(&filter, v));
    Ok(stream(live, backlog, keep).into_response())
}

/// Which events a stream passes on.
pub type Filter = Arc<dyn Fn(&Shared) -> bool + Send + Sync>;

/// The backlog, then live events from `live`, as Server-Sent Events with keep-alives.
pub fn stream(
    mut live: tokio::sync::broadcast::Receiver<Arc<Shared>>,
    backlog: crate::events::Backlog,
    keep: Filter,
) -> Sse<impl futures_core::Stream<Item = Result<Event, Infallible>> + Send> {
    let s = async_stream(backlog, keep, move || {
        let fut = async move {
            let r = live.recv().await;
            (r, live)
        };
        Box::pin(fut)
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The backlog after `Last-Event-ID` (if the request has one), or none: the stream then starts
/// with new events.
pub async fn backlog(h: &Handle, headers: &HeaderMap) -> Result<crate::events::Backlog, ApiError> {
    let last_id = match headers.get("last-event-id") {
        Some(v) => Some(seq_param(
            "Last-Event-ID",
            v.to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?,
        )?),
        None => None,
    };
    Ok(match last_id {
        Some(id) => h.events_since(id).await?,
        None => {
            let b = h.events_since(u64::MAX).await?;
            crate::events::Backlog {
                events: Vec::new(),
                gap: None,
                last_seq: b.last_seq,
            }
        }
    })
}

type Recv = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    Result<Arc<Shared>, RecvError>,
                    tokio::sync::broadcast::Receiver<Arc<Shared>>,
                ),
            > + Send,
    >,
>;

/// The backlog, then live events after it; a `gap` event wherever some were lost.
fn async_stream(
    backlog: crate::events::Backlog,
    filter: Filter,
    first: impl FnOnce() -> Recv + Send + 'static,
) -> impl futures_core::Stream<Item = Result<Event, Infallible>> + Send {
    /// A gap, or an event (its JSON built only if the filter keeps it).
    enum Item {
        Gap(Value),
        Event(Arc<Shared>),
    }
    struct St {
        queue: std::collections::VecDeque<Item>,
        last: u64,
        next: Option<Recv>,
        filter: Filter,
    }
    let mut queue = std::collections::VecDeque::new();
    if let Some((from, to)) = backlog.gap {
        queue.push_back(Item::Gap(gap(from, to)));
    }
    let last = backlog.events.last().map_or(backlog.last_seq, |v| v.seq());
    queue.extend(backlog.events.iter().cloned().map(Item::Event));
    let st = St {
        queue,
        last,
        next: Some(first()),
        filter,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            match st.queue.pop_front() {
                Some(Item::Gap(v)) => return Some((Ok(sse(&v)), st)),
                Some(Item::Event(v)) if (st.filter)(&v) => {
                    return Some((Ok(sse(v.json())), st));
                }
                Some(Item::Event(_)) => continue,
                None => {}
            }
            let fut = st.next.take()?;
            let (r, mut rx) = fut.await;
            match r {
                Ok(v) => {
                    if v.seq() > st.last {
                        st.last = v.seq();
                        st.queue.push_back(Item::Event(v));
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    st.queue.push_back(Item::Gap(gap(st.last + 1, st.last + n)));
                    st.last += n;
                }
                Err(RecvError::Closed) => return None,
            }
            st.next = Some(Box::pin(async move {
                let r = rx.recv().await;
                (r, rx)
            }));
        }
    })
}
