//! Sessions: one lease that several locks share, so an application renews once for all of them.
//!
//! - `PUT /v1/session?ttl=15s&lock_delay=5s`: create; 200 `{"session": ID, "ttl_ms",
//!   "lock_delay_ms", "act_for_ms"}`.
//! - `PUT /v1/lock/{name}?session=ID` (instead of `owner`): acquire a lock for the session, with
//!   its lease and lock delay (`lock_api`); `DELETE /v1/lock/{name}?session=ID&token=T` releases it.
//! - `POST /v1/session/{id}/renew`: renews the session and every lock it holds; 200 with the
//!   locks still held, those lost, and `act_for_ms`, the shortest acting window among them.
//! - `GET /v1/session/{id}`: the session, whether its lease still runs, and its locks.
//! - `DELETE /v1/session/{id}`: releases every lock of the session, then the session.
//!
//! A session is itself a lock (`#session/ID`, held by the session, term 1), so its lease follows
//! the lock rules: the grantors judge it by their own clocks since its last renewal. Its locks are
//! ordinary locks owned by `session:ID`, each with its own lease, renewed together with the
//! session: a lock never outlives its own lease whatever happens to the session's, so sharing adds
//! no new way to hold a lock too long. The names and tokens of a session's locks are kept in a
//! register (`#session-locks/ID`) changed by compare-and-set. Renewing is one round per lock plus
//! one for the session: an application with hundreds of locks per session pays for each.

use crate::api::ApiError;
use crate::driver::Handle;
use crate::lock_api::{self, duration, ms, run};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use coord::{Change, Expect, LockOp, LockOutcome, LockState, Outcome, Request};
use rand::TryRng;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Strong keys of sessions start with this.
pub const SESSION_PREFIX: &str = "#session/";
/// Strong keys of the registers listing a session's locks start with this.
pub const LOCKS_PREFIX: &str = "#session-locks/";
/// A lock held for a session names this owner, followed by the session's id.
pub const OWNER_PREFIX: &str = "session:";

type Params = Query<BTreeMap<String, String>>;

/// The owner a lock held for session `id` names.
pub fn owner_of(id: &str) -> String {
    format!("{OWNER_PREFIX}{id}")
}

/// A session id: 16 lower-case hex digits, as `create` makes them.
fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "session {id:?} is not a session id (16 hex digits, from PUT /v1/session)"
        )))
    }
}

/// The session's own lock: its lease, as the grantors see it.
pub(crate) struct Session {
    pub(crate) state: LockState,
    pub(crate) age: Option<Duration>,
}

impl Session {
    /// Whether the session's lease still runs by the grantors' clocks.
    pub(crate) fn live(&self) -> bool {
        let lease = Duration::from_millis(self.state.ttl_ms);
        self.state.holder.is_some() && self.age.is_some_and(|a| a < lease)
    }
}

/// Reads session `id`: 404 `not_found` when there is none (never created, or destroyed).
pub(crate) async fn session(h: &Handle, id: &str) -> Result<Session, ApiError> {
    check_id(id)?;
    match run(h, format!("{SESSION_PREFIX}{id}"), LockOp::Inspect).await? {
        LockOutcome::State { state, age } if state.holder.as_deref() == Some(id) => {
            Ok(Session { state, age })
        }
        LockOutcome::State { .. } => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no session {id} (never created, or destroyed)"),
        )),
        other => Err(ApiError::internal(format!(
            "unexpected lock answer {other:?}"
        ))),
    }
}

/// The session's lease, for a lock taken for it: 409 `lost` when the lease ran out.
pub(crate) async fn lease_for_lock(h: &Handle, id: &str) -> Result<(Duration, Duration), ApiError> {
    let s = session(h, id).await?;
    if !s.live() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "lost",
            format!("session {id}'s lease ran out: create a new session"),
        ));
    }
    Ok((
        Duration::from_millis(s.state.ttl_ms),
        Duration::from_millis(s.state.lock_delay_ms),
    ))
}

/// The locks session `id` holds (name → fencing token) and the register's version.
async fn locks(h: &Handle, id: &str) -> Result<(u64, BTreeMap<String, u64>), ApiError> {
    let req = Request {
        key: format!("{LOCKS_PREFIX}{id}"),
        change: Change::Read,
    };
    match h.strong(req).await?? {
        Outcome::Value(r) => {
            let locks = r
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice(v).ok())
                .unwrap_or_default();
            Ok((r.version, locks))
        }
        other => Err(ApiError::internal(format!(
            "unexpected answer to a read: {other:?}"
        ))),
    }
}

/// Changes the list of session `id`'s locks by compare-and-set, reading again after a conflict
/// (two requests of one session at once); the list as written.
pub(crate) async fn update_locks(
    h: &Handle,
    id: &str,
    change: impl Fn(&mut BTreeMap<String, u64>),
) -> Result<BTreeMap<String, u64>, ApiError> {
    for _ in 0..16 {
        let (version, mut list) = locks(h, id).await?;
        change(&mut list);
        let expect = if version == 0 {
            Expect::Absent
        } else {
            Expect::Version(version)
        };
        let req = Request {
            key: format!("{LOCKS_PREFIX}{id}"),
            change: Change::Put {
                value: serde_json::to_vec(&list).expect("a map of names to numbers serialises"),
                expect,
            },
        };
        match h.strong(req).await?? {
            Outcome::Written { .. } => return Ok(list),
            Outcome::Conflict(_) => continue,
            other => {
                return Err(ApiError::internal(format!(
                    "unexpected answer to a compare-and-set: {other:?}"
                )));
            }
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "contended",
        format!("session {id}'s lock list kept changing under 16 tries: retry"),
    ))
}

/// `PUT /v1/session`: create.
pub async fn create(State(h): State<Handle>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    let ttl = duration(&q, "ttl", "15s")?;
    let lock_delay = duration(&q, "lock_delay", "5s")?;
    let mut raw = [0u8; 8];
    rand::rngs::SysRng
        .try_fill_bytes(&mut raw)
        .map_err(|e| ApiError::internal(format!("no OS randomness for a session id: {e}")))?;
    let id = format!("{:016x}", u64::from_le_bytes(raw));
    let op = LockOp::Acquire {
        owner: id.clone(),
        ttl,
        lock_delay,
    };
    match run(&h, format!("{SESSION_PREFIX}{id}"), op).await? {
        LockOutcome::Holding { act_for, .. } => Ok(Json(json!({
            "session": id,
            "ttl_ms": ms(ttl),
            "lock_delay_ms": ms(lock_delay),
            "act_for_ms": ms(act_for),
        }))),
        other => Err(ApiError::internal(format!(
            "a new session's lock answered {other:?}"
        ))),
    }
}

/// `POST /v1/session/{id}/renew`: the session and each of its locks.
pub async fn renew(
    State(h): State<Handle>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = session(&h, &id).await?;
    let renewed = LockOp::Renew {
        owner: id.clone(),
        term: s.state.term,
    };
    let mut act_for = match run(&h, format!("{SESSION_PREFIX}{id}"), renewed).await? {
        LockOutcome::Holding { act_for, .. } => act_for,
        other => return lock_api::answer(&id, other),
    };
    let (_, held) = locks(&h, &id).await?;
    let owner = owner_of(&id);
    let mut lost = Vec::new();
    for (name, term) in &held {
        let op = LockOp::Renew {
            owner: owner.clone(),
            term: *term,
        };
        match run(&h, lock_api::key(name)?, op).await? {
            LockOutcome::Holding { act_for: a, .. } => act_for = act_for.min(a),
            _ => lost.push(name.clone()),
        }
    }
    let held = if lost.is_empty() {
        held
    } else {
        update_locks(&h, &id, |l| l.retain(|n, _| !lost.contains(n))).await?
    };
    Ok(Json(json!({
        "session": id,
        "act_for_ms": ms(act_for),
        "locks": held,
        "lost": lost,
    })))
}

/// `GET /v1/session/{id}`.
pub async fn inspect(
    State(h): State<Handle>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = session(&h, &id).await?;
    let (_, held) = locks(&h, &id).await?;
    Ok(Json(json!({
        "session": id,
        "live": s.live(),
        "ttl_ms": s.state.ttl_ms,
        "lock_delay_ms": s.state.lock_delay_ms,
        "changed_ms_ago": s.age.map(ms),
        "locks": held,
    })))
}

/// `DELETE /v1/session/{id}`: releases its locks, then the session.
pub async fn destroy(
    State(h): State<Handle>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = session(&h, &id).await?;
    let (_, held) = locks(&h, &id).await?;
    let owner = owner_of(&id);
    let mut released = BTreeMap::new();
    for (name, term) in &held {
        let op = LockOp::Release {
            owner: owner.clone(),
            term: *term,
        };
        if let LockOutcome::Released { term } = run(&h, lock_api::key(name)?, op).await? {
            released.insert(name.clone(), term);
        }
    }
    update_locks(&h, &id, |l| l.clear()).await?;
    let op = LockOp::Release {
        owner: id.clone(),
        term: s.state.term,
    };
    run(&h, format!("{SESSION_PREFIX}{id}"), op).await?;
    Ok(Json(json!({ "destroyed": id, "released": released })))
}
