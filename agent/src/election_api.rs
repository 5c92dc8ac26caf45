//! Named elections over HTTP: a leader per name, with a fencing token and a proclamation.
//!
//! - `PUT /v1/election/{name}?candidate=C&ttl=15s&lock_delay=5s&wait=30s`, body = proclamation:
//!   campaign. `C` becomes the leader when nobody holds the election (or its lease and lock delay
//!   ran out), waiting up to `wait`; the answer is the lock's (`holder`, `fencing_token`,
//!   `ttl_ms`, `act_for_ms`) with the `value` proclaimed. 409 `locked` with the leader while
//!   another leads.
//! - `POST /v1/election/{name}/proclaim?candidate=C&token=T`, body = the new proclamation: the
//!   leader says something new (it also extends its lease); 409 `lost` when `C` does not lead at
//!   `T`.
//! - `POST /v1/election/{name}/renew?candidate=C&token=T`: the leader keeps its lease.
//! - `DELETE /v1/election/{name}?candidate=C&token=T`: resign.
//! - `GET /v1/election/{name}`: observe: `{"leader", "fencing_token", "value", "changed_ms_ago"}`.
//!
//! An election is a lock (`#election/NAME`, the same lease rules and fencing token as
//! `/v1/lock`) and a register (`#election-value/NAME`) that only fenced writes change: a
//! proclamation carries the leader's token, so once a newer leader has proclaimed no older one can
//! overwrite it. `value` is shown only when it was proclaimed at the current token: between a new
//! leader's election and its first proclamation the old value is not passed off as the new
//! leader's. Proclamations are UTF-8 text of at most [`MAX_VALUE_BYTES`].

use crate::api::ApiError;
use crate::driver::Handle;
use crate::lock_api::{self, answer, lease_holder, ms, param, run, token};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use coord::{Change, Expect, LockOp, LockOutcome, Outcome, Request};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Strong keys of elections' locks start with this.
pub const ELECTION_PREFIX: &str = "#election/";
/// Strong keys of elections' proclamations start with this.
pub const VALUE_PREFIX: &str = "#election-value/";
/// Longest proclamation, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

type Params = Query<BTreeMap<String, String>>;

/// The lock key and the value key of election `name`.
fn keys(name: &str) -> Result<(String, String), ApiError> {
    if name.is_empty() || name.len() > lock_api::MAX_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "an election name is 1 to {} bytes, got {}",
            lock_api::MAX_NAME_BYTES,
            name.len()
        )));
    }
    Ok((
        format!("{ELECTION_PREFIX}{name}"),
        format!("{VALUE_PREFIX}{name}"),
    ))
}

/// The proclamation in a request body, checked.
fn proclamation(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let body = body.map_err(ApiError::from_body)?;
    if body.len() > MAX_VALUE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "a proclamation is at most {MAX_VALUE_BYTES} bytes, got {}",
                body.len()
            ),
        )
        .with("size", json!(body.len()))
        .with("max", json!(MAX_VALUE_BYTES)));
    }
    String::from_utf8(body.to_vec())
        .map_err(|e| ApiError::bad_request(format!("a proclamation is UTF-8 text: {e}")))
}

/// Writes `value` as election `name`'s proclamation at fencing token `term`.
async fn proclaim_at(
    h: &Handle,
    name: &str,
    value_key: String,
    term: u64,
    value: &str,
) -> Result<(), ApiError> {
    let change = Change::Fenced {
        lock: name.to_string(),
        token: term,
        change: Box::new(Change::Put {
            value: value.as_bytes().to_vec(),
            expect: Expect::Any,
        }),
    };
    let req = Request {
        key: value_key,
        change,
    };
    match h.strong(req).await?? {
        Outcome::Written { .. } => Ok(()),
        Outcome::StaleToken { seen, .. } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "lost",
            format!("a newer leader (fencing token {seen}) has proclaimed: stop acting"),
        )
        .with("fencing_token", json!(seen))),
        other => Err(ApiError::internal(format!(
            "unexpected answer to a proclamation: {other:?}"
        ))),
    }
}

/// After a campaign or a renewal: proclaims `value` if `candidate` leads, then answers with the
/// lock's answer and the value.
async fn proclaim_if_leading(
    h: &Handle,
    name: &str,
    value_key: String,
    candidate: &str,
    outcome: LockOutcome,
    value: &str,
) -> Result<Json<Value>, ApiError> {
    if let LockOutcome::Holding { term, .. } = outcome {
        proclaim_at(h, name, value_key, term, value).await?;
    }
    let Json(mut v) = answer(candidate, outcome)?;
    v["value"] = json!(value);
    Ok(Json(v))
}

/// `PUT /v1/election/{name}`: campaign, optionally waiting.
pub async fn campaign(
    State(h): State<Handle>,
    Path(name): Path<String>,
    Query(q): Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (lock_key, value_key) = keys(&name)?;
    let candidate = param(&q, "candidate")?.to_string();
    let value = proclamation(body)?;
    let ttl = lock_api::duration(&q, "ttl", "15s")?;
    let lock_delay = lock_api::duration(&q, "lock_delay", "5s")?;
    let wait = lock_api::wait(&q)?;
    let outcome =
        lock_api::acquire_waiting(&h, lock_key, &candidate, ttl, lock_delay, wait).await?;
    proclaim_if_leading(&h, &name, value_key, &candidate, outcome, &value).await
}

/// `POST /v1/election/{name}/proclaim`.
pub async fn proclaim(
    State(h): State<Handle>,
    Path(name): Path<String>,
    Query(q): Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (lock_key, value_key) = keys(&name)?;
    let candidate = param(&q, "candidate")?.to_string();
    let term = token(&q)?;
    let value = proclamation(body)?;
    // Renewing first proves `candidate` still leads at `term` (and the fenced write then keeps
    // any older leader from overwriting it).
    let op = LockOp::Renew {
        owner: candidate.clone(),
        term,
    };
    let outcome = run(&h, lock_key, op).await?;
    proclaim_if_leading(&h, &name, value_key, &candidate, outcome, &value).await
}

/// `POST /v1/election/{name}/renew`.
pub async fn renew(
    State(h): State<Handle>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let (lock_key, _) = keys(&name)?;
    let candidate = param(&q, "candidate")?.to_string();
    let op = LockOp::Renew {
        owner: candidate.clone(),
        term: token(&q)?,
    };
    answer(&candidate, run(&h, lock_key, op).await?)
}

/// `DELETE /v1/election/{name}`: resign.
pub async fn resign(
    State(h): State<Handle>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let (lock_key, _) = keys(&name)?;
    let candidate = param(&q, "candidate")?.to_string();
    let op = LockOp::Release {
        owner: candidate.clone(),
        term: token(&q)?,
    };
    match run(&h, lock_key, op).await? {
        LockOutcome::Released { term } => Ok(Json(json!({ "resigned": term }))),
        other => answer(&candidate, other),
    }
}

/// `GET /v1/election/{name}`: observe.
pub async fn observe(
    State(h): State<Handle>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (lock_key, value_key) = keys(&name)?;
    let holder = lease_holder(&h, lock_key).await?;
    let req = Request {
        key: value_key,
        change: Change::Read,
    };
    let value = match h.strong(req).await?? {
        Outcome::Value(r) if r.fences.get(&name) == Some(&holder.token) => r.value,
        _ => None,
    };
    let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
    Ok(Json(json!({
        "leader": holder.owner,
        "fencing_token": holder.token,
        "value": holder.owner.as_ref().and(value),
        "changed_ms_ago": holder.age.map(ms),
    })))
}
