//! Locks over HTTP: leases with fencing tokens, on the strong keyspace (docs/coordination.md).
//!
//! - `PUT /v1/lock/{name}?owner=O&ttl=15s&lock_delay=5s&wait=10s`: acquire (or, for the
//!   holder, extend); with `wait`, keeps trying until it gets the lock or the wait ends.
//!   200 `{"holder", "fencing_token", "ttl_ms", "act_for_ms"}`; 409 `locked` with the holder, its
//!   token and `retry_after_ms`.
//! - `POST /v1/lock/{name}/renew?owner=O&token=T`: extend the lease; 409 `lost` when `O` no longer
//!   holds the lock at `T` (it must stop acting).
//! - `DELETE /v1/lock/{name}?owner=O&token=T`: release; 409 `lost` as above.
//! - `GET /v1/lock/{name}`: the holder, its token, its lease, and how long ago (by the grantors'
//!   clocks) the lock last changed.
//!
//! The agent never renews on an application's behalf: a hung application must lose its lock.

use crate::api::ApiError;
use crate::driver::Handle;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use coord::{Change, LockOp, LockOutcome, Outcome, Request};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Strong keys of locks start with this; clients' own strong keys may not.
pub const LOCK_PREFIX: &str = "#lock/";

/// Longest lock name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Longest `wait` of a blocking acquire.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

type Params = Query<BTreeMap<String, String>>;

pub(crate) fn key(name: &str) -> Result<String, ApiError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "a lock name is 1 to {MAX_NAME_BYTES} bytes, got {}",
            name.len()
        )));
    }
    Ok(format!("{LOCK_PREFIX}{name}"))
}

pub(crate) fn param<'a>(q: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    q.get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("the query parameter {name} is required")))
}

pub(crate) fn duration(
    q: &BTreeMap<String, String>,
    name: &str,
    default: &str,
) -> Result<Duration, ApiError> {
    let v = q.get(name).map_or(default, String::as_str);
    humantime::parse_duration(v)
        .map_err(|e| ApiError::bad_request(format!("{name}={v:?}: {e} (write e.g. 15s, 500ms)")))
}

pub(crate) fn token(q: &BTreeMap<String, String>) -> Result<u64, ApiError> {
    let t = param(q, "token")?;
    t.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "token={t:?} is not a fencing token (a whole number)"
        ))
    })
}

pub(crate) async fn run(h: &Handle, key: String, op: LockOp) -> Result<LockOutcome, ApiError> {
    match h
        .strong(Request {
            key,
            change: Change::Lock(op),
        })
        .await??
    {
        Outcome::Lock(l) => Ok(l),
        other => Err(ApiError::internal(format!(
            "a lock change answered {other:?}"
        ))),
    }
}

pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The answer to a successful acquire or renew, or the error for the others.
pub(crate) fn answer(owner: &str, outcome: LockOutcome) -> Result<Json<Value>, ApiError> {
    match outcome {
        LockOutcome::Holding { term, ttl, act_for } => Ok(Json(json!({
            "holder": owner,
            "fencing_token": term,
            "ttl_ms": ms(ttl),
            "act_for_ms": ms(act_for),
        }))),
        LockOutcome::Busy {
            holder,
            term,
            remaining,
        } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "locked",
            format!("the lock is held by {holder:?} (fencing token {term})"),
        )
        .with("holder", json!(holder))
        .with("fencing_token", json!(term))
        .with("retry_after_ms", json!(ms(remaining)))),
        LockOutcome::Lost { holder, term } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "lost",
            format!(
                "{owner:?} does not hold the lock at that token (now {}, fencing token {term}): stop acting",
                holder.as_deref().map_or("free".to_string(), |h| format!("held by {h:?}"))
            ),
        )
        .with("holder", json!(holder))
        .with("fencing_token", json!(term))),
        other => Err(ApiError::internal(format!("unexpected lock answer {other:?}"))),
    }
}

/// Who a lock request is for: `owner=O`, or `session=ID` (the owner is then `session:ID`).
fn holder(q: &BTreeMap<String, String>) -> Result<(String, Option<String>), ApiError> {
    match (q.get("owner"), q.get("session")) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give owner or session, not both")),
        (None, Some(id)) => Ok((crate::session_api::owner_of(id), Some(id.clone()))),
        (Some(o), None) if o.starts_with(crate::session_api::OWNER_PREFIX) => {
            Err(ApiError::bad_request(format!(
                "owner={o:?}: owners starting with {:?} are sessions' (use session=ID)",
                crate::session_api::OWNER_PREFIX
            )))
        }
        (Some(o), None) => Ok((o.clone(), None)),
        (None, None) => Err(ApiError::bad_request(
            "the query parameter owner (or session) is required",
        )),
    }
}

/// `PUT /v1/lock/{name}`: acquire, optionally waiting; for a session, with the session's lease.
pub async fn acquire(
    State(h): State<Handle>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let key = key(&name)?;
    let (owner, session) = holder(&q)?;
    let (ttl, lock_delay) = match &session {
        Some(id) => {
            if q.contains_key("ttl") || q.contains_key("lock_delay") {
                return Err(ApiError::bad_request(
                    "a session's locks take its ttl and lock_delay; give neither",
                ));
            }
            crate::session_api::lease_for_lock(&h, id).await?
        }
        None => (
            duration(&q, "ttl", "15s")?,
            duration(&q, "lock_delay", "5s")?,
        ),
    };
    let outcome = acquire_waiting(&h, key, &owner, ttl, lock_delay, wait(&q)?).await?;
    if let (Some(id), LockOutcome::Holding { term, .. }) = (&session, &outcome) {
        let term = *term;
        crate::session_api::update_locks(&h, id, |l| {
            l.insert(name.clone(), term);
        })
        .await?;
    }
    answer(&owner, outcome)
}

/// The `wait` of a blocking acquire, checked.
pub(crate) fn wait(q: &BTreeMap<String, String>) -> Result<Duration, ApiError> {
    let wait = duration(q, "wait", "0s")?;
    if wait > MAX_WAIT {
        return Err(ApiError::bad_request(format!(
            "wait={wait:?} is over the limit of {MAX_WAIT:?}"
        )));
    }
    Ok(wait)
}

/// Asks for the lock at `key` for `owner`, again and again while another holds it and `wait`
/// lasts; the last answer. A grant's `act_for` is counted from when this call began, as clients
/// count it from when they sent the request: the round's own window starts at the last attempt,
/// so the time spent waiting before it is added. Without it a holder that waited longer than
/// its window got a grant already over on arrival (1,759 ms counted from a request answered after
/// 2,818 ms), and `chorus elect` stopped its command right after starting it.
pub(crate) async fn acquire_waiting(
    h: &Handle,
    key: String,
    owner: &str,
    ttl: Duration,
    lock_delay: Duration,
    wait: Duration,
) -> Result<LockOutcome, ApiError> {
    let began = Instant::now();
    let until = began + wait;
    loop {
        let op = LockOp::Acquire {
            owner: owner.to_string(),
            ttl,
            lock_delay,
        };
        let asked = Instant::now();
        let outcome = run(h, key.clone(), op).await?;
        let retry = match outcome {
            LockOutcome::Busy { remaining, .. } => remaining,
            LockOutcome::Holding { term, ttl, act_for } => {
                return Ok(LockOutcome::Holding {
                    term,
                    ttl,
                    act_for: act_for + (asked - began),
                });
            }
            other => return Ok(other),
        };
        let now = Instant::now();
        if now >= until {
            return Ok(outcome);
        }
        // Ask again when the lease may have run out (or sooner, if it was released meanwhile).
        let nap = retry.clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::time::sleep(nap.min(until - now)).await;
    }
}

/// `POST /v1/lock/{name}/renew`.
pub async fn renew(
    State(h): State<Handle>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let key = key(&name)?;
    let (owner, _) = holder(&q)?;
    let term = token(&q)?;
    let outcome = run(
        &h,
        key,
        LockOp::Renew {
            owner: owner.clone(),
            term,
        },
    )
    .await?;
    answer(&owner, outcome)
}

/// `DELETE /v1/lock/{name}`.
pub async fn release(
    State(h): State<Handle>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let key = key(&name)?;
    let (owner, session) = holder(&q)?;
    let term = token(&q)?;
    let op = LockOp::Release {
        owner: owner.clone(),
        term,
    };
    match run(&h, key, op).await? {
        LockOutcome::Released { term } => {
            if let Some(id) = &session {
                crate::session_api::update_locks(&h, id, |l| {
                    l.remove(&name);
                })
                .await?;
            }
            Ok(Json(json!({ "released": term })))
        }
        other => answer(&owner, other),
    }
}

/// `GET /v1/lock/{name}`.
pub async fn inspect(
    State(h): State<Handle>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = key(&name)?;
    match run(&h, key, LockOp::Inspect).await? {
        LockOutcome::State { state, age } => Ok(Json(json!({
            "holder": state.holder,
            "fencing_token": state.term,
            "ttl_ms": state.ttl_ms,
            "lock_delay_ms": state.lock_delay_ms,
            "changed_ms_ago": age.map(ms),
        }))),
        other => Err(ApiError::internal(format!(
            "unexpected lock answer {other:?}"
        ))),
    }
}

/// A lock's holder as a quorum of acceptors sees it (one linearizable read of the lock): the
/// owner while its lease runs by the grantors' clocks, the fencing token of the current or last
/// holder, and how long ago the lock last changed. For the cluster leader the owner is `NAME/ID`.
pub struct LeaseHolder {
    /// The holder; `None` when nobody holds a live lease.
    pub owner: Option<String>,
    /// The fencing token of the current (or last) leader.
    pub token: u64,
    /// How long ago, by the grantors' clocks, the lock last changed.
    pub age: Option<Duration>,
}

impl LeaseHolder {
    /// The cluster leader's node name and id (from an owner `NAME/ID`).
    pub fn name_and_id(&self) -> Option<(&str, &str)> {
        self.owner
            .as_deref()
            .map(|o| o.rsplit_once('/').unwrap_or((o, "")))
    }
}

/// Reads the cluster leader (see [`LeaseHolder`]).
pub async fn cluster_leader(h: &Handle) -> Result<LeaseHolder, ApiError> {
    lease_holder(h, node::LEADER_LOCK.to_string()).await
}

/// Reads the holder of the lock at `key` (see [`LeaseHolder`]).
pub(crate) async fn lease_holder(h: &Handle, key: String) -> Result<LeaseHolder, ApiError> {
    match run(h, key, LockOp::Inspect).await? {
        LockOutcome::State { state, age } => {
            let lease = Duration::from_millis(state.ttl_ms);
            let live = state.holder.is_some() && age.is_some_and(|a| a < lease);
            Ok(LeaseHolder {
                owner: state.holder.filter(|_| live),
                token: state.term,
                age,
            })
        }
        other => Err(ApiError::internal(format!(
            "unexpected lock answer {other:?}"
        ))),
    }
}

/// `GET /v1/leader`: the cluster leader, read linearizably from its lock, and whether this node
/// is it (by its own acting window, which ends before the grantors' lease).
pub async fn leader(State(h): State<Handle>) -> Result<Json<Value>, ApiError> {
    let status = h.status().await?;
    let l = cluster_leader(&h).await?;
    Ok(Json(json!({
        "leader": l.name_and_id().map(|(n, _)| n),
        "owner": l.owner,
        "fencing_token": l.token,
        "changed_ms_ago": l.age.map(ms),
        "this_node": status.leading.is_some(),
        "candidate": status.leader_candidate,
    })))
}
