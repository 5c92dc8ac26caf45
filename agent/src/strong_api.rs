//! The strong keyspace over HTTP: linearizable compare-and-set registers (CASPaxos).
//!
//! - `GET /v1/strong/{key}`: the value, version in `Chorus-Version`; 404 `not_found` (with the
//!   version) when the key holds no value.
//! - `PUT /v1/strong/{key}`: body = value; `If-Match: VERSION` sets it only at that version,
//!   `If-None-Match: *` only when the key holds no value; 200 `{"version": N}`, or 409 `conflict`
//!   with the current `version` and `value` (base64) when the condition does not hold.
//! - `DELETE /v1/strong/{key}`: optional `If-Match`; 200 `{"version": N}`, 404 when there is no
//!   value, 409 `conflict` as above.
//!
//! Every read and every failed condition still takes two quorum rounds (it writes the register
//! back), which is what makes them linearizable.

use crate::api::ApiError;
use crate::driver::Handle;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use coord::{Change, CoordError, Expect, Outcome, Register, Request};
use serde_json::json;
use std::collections::BTreeMap;

impl From<CoordError> for ApiError {
    fn from(e: CoordError) -> Self {
        let status = match e {
            CoordError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            CoordError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CoordError::NoQuorum { .. } | CoordError::Contended => StatusCode::SERVICE_UNAVAILABLE,
            CoordError::Indeterminate => StatusCode::GATEWAY_TIMEOUT,
        };
        let mut err = ApiError::new(status, e.code(), e.to_string());
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&e) {
            for (k, v) in map.into_iter().filter(|(k, _)| k != "code") {
                err = err.with(&k, v);
            }
        }
        err
    }
}

/// What `If-Match` / `If-None-Match` ask for.
fn expect(headers: &HeaderMap) -> Result<Expect, ApiError> {
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().trim_matches('"').to_string())
                    .map_err(|_| ApiError::bad_request(format!("{name} is not text")))
            })
            .transpose()
    };
    match (text("if-match")?, text("if-none-match")?) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give If-Match or If-None-Match, not both",
        )),
        (Some(v), None) => v.parse::<u64>().map(Expect::Version).map_err(|_| {
            ApiError::bad_request(format!(
                "If-Match: {v:?} is not a version (a whole number from Chorus-Version)"
            ))
        }),
        (None, Some(v)) if v == "*" => Ok(Expect::Absent),
        (None, Some(v)) => Err(ApiError::bad_request(format!(
            "If-None-Match: {v:?}: only * (create if absent) is supported"
        ))),
        (None, None) => Ok(Expect::Any),
    }
}

async fn run(h: &Handle, key: String, change: Change) -> Result<Outcome, ApiError> {
    if key.starts_with('#') {
        return Err(ApiError::bad_request(format!(
            "strong keys starting with '#' are reserved (locks live under {:?})",
            crate::lock_api::LOCK_PREFIX
        )));
    }
    Ok(h.strong(Request { key, change }).await??)
}

fn conflict(r: &Register) -> ApiError {
    let value = r
        .value
        .as_ref()
        .map(|v| base64::engine::general_purpose::STANDARD.encode(v));
    ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!(
            "the condition does not hold: the key is at version {}{}",
            r.version,
            if r.value.is_some() {
                ""
            } else {
                " with no value"
            }
        ),
    )
    .with("version", json!(r.version))
    .with("value", json!(value))
}

fn absent(r: &Register) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "the strong key holds no value",
    )
    .with("version", json!(r.version))
}

fn written(outcome: Outcome) -> Result<Response, ApiError> {
    match outcome {
        Outcome::Written { version } => {
            Ok(axum::Json(json!({ "version": version })).into_response())
        }
        Outcome::Conflict(r) => Err(conflict(&r)),
        Outcome::Absent(r) => Err(absent(&r)),
        Outcome::StaleToken { lock, token, seen } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_token",
            format!(
                "fencing token {token} of lock {lock:?} is stale: a write of this key already carried token {seen}"
            ),
        )
        .with("lock", json!(lock))
        .with("token", json!(token))
        .with("seen", json!(seen))),
        other @ (Outcome::Value(_) | Outcome::Lock(_)) => {
            Err(ApiError::internal(format!("a write answered {other:?}")))
        }
    }
}

/// `GET /v1/strong/{key}`.
pub async fn get(State(h): State<Handle>, Path(key): Path<String>) -> Result<Response, ApiError> {
    match run(&h, key, Change::Read).await? {
        Outcome::Value(r) => match r.value {
            Some(v) => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                headers.insert("chorus-version", HeaderValue::from(r.version));
                Ok((headers, v).into_response())
            }
            None => Err(absent(&r)),
        },
        other => Err(ApiError::internal(format!("a read answered {other:?}"))),
    }
}

/// `PUT /v1/strong/{key}`.
pub async fn put(
    State(h): State<Handle>,
    Path(key): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from_body)?;
    let change = Change::Put {
        value: body.to_vec(),
        expect: expect(&headers)?,
    };
    written(run(&h, key, fenced(&q, change)?).await?)
}

/// `DELETE /v1/strong/{key}`.
pub async fn delete(
    State(h): State<Handle>,
    Path(key): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let change = Change::Delete {
        expect: expect(&headers)?,
    };
    written(run(&h, key, fenced(&q, change)?).await?)
}

/// The change, fenced when the request carries `?fence=LOCK:TOKEN`.
fn fenced(q: &BTreeMap<String, String>, change: Change) -> Result<Change, ApiError> {
    let Some(f) = q.get("fence") else {
        return Ok(change);
    };
    let bad = || {
        ApiError::bad_request(format!(
            "fence={f:?}: write LOCK:TOKEN, with the fencing token the lock's holder was given"
        ))
    };
    let (lock, token) = f.rsplit_once(':').ok_or_else(bad)?;
    let token = token.parse::<u64>().map_err(|_| bad())?;
    if lock.is_empty() || lock.len() > crate::lock_api::MAX_NAME_BYTES {
        return Err(bad());
    }
    Ok(Change::Fenced {
        lock: lock.to_string(),
        token,
        change: Box::new(change),
    })
}
