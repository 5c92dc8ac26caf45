//! The HTTP API: status, members, health and metrics. Errors are JSON with a stable code.

use crate::driver::{Gone, Handle, StatusReport};
use crate::metrics;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use membership::{MemberState, MemberView};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// An API error: an HTTP status, a stable machine-readable code, and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<Gone> for ApiError {
    fn from(_: Gone) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the agent is shutting down",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// The API router over a driver handle.
pub fn router(handle: Handle) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/v1/health", get(health))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .with_state(handle)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {}", uri.path()),
    )
}

/// Formats a core time (Unix time as a duration) as RFC 3339.
pub fn rfc3339(t: Duration) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + t).to_string()
}

#[derive(Serialize)]
struct QuorumJson {
    has_quorum: bool,
    reachable_votes: u32,
    required_votes: u32,
    total_votes: u32,
    since: String,
    since_unix_ms: u128,
}

#[derive(Serialize)]
struct StatusJson {
    node: MemberJson,
    cluster: String,
    quorum: QuorumJson,
    members: BTreeMap<&'static str, usize>,
    reachable: Vec<String>,
    unreachable: Vec<String>,
    leaving: bool,
}

/// One member as the API shows it.
#[derive(Serialize)]
pub struct MemberJson {
    id: String,
    name: String,
    state: MemberState,
    datacenter: String,
    gossip_addr: String,
    api_addr: Option<String>,
    generation: u64,
    tags: BTreeMap<String, String>,
    votes: u32,
    is_self: bool,
}

impl From<MemberView> for MemberJson {
    fn from(m: MemberView) -> Self {
        MemberJson {
            id: m.id.to_string(),
            name: m.name,
            state: m.state,
            datacenter: m.datacenter,
            gossip_addr: m.gossip_addr.to_string(),
            api_addr: m.api_addr.map(|a| a.to_string()),
            generation: m.generation,
            tags: m.tags,
            votes: m.votes,
            is_self: m.is_self,
        }
    }
}

fn status_json(s: StatusReport) -> StatusJson {
    StatusJson {
        node: s.node.into(),
        cluster: s.cluster,
        quorum: QuorumJson {
            has_quorum: s.quorum.has_quorum,
            reachable_votes: s.quorum.reachable_votes,
            required_votes: s.quorum.required_votes,
            total_votes: s.quorum.total_votes,
            since: rfc3339(s.quorum.since),
            since_unix_ms: s.quorum.since.as_millis(),
        },
        members: s.members.into_iter().map(|(k, v)| (k.name(), v)).collect(),
        reachable: s.reachable,
        unreachable: s.unreachable,
        leaving: s.leaving,
    }
}

async fn status(State(h): State<Handle>) -> Result<Json<serde_json::Value>, ApiError> {
    let s = h.status().await?;
    Ok(Json(
        serde_json::to_value(status_json(s)).expect("status serialises"),
    ))
}

async fn members(State(h): State<Handle>) -> Result<Json<serde_json::Value>, ApiError> {
    let m: Vec<MemberJson> = h
        .members()
        .await?
        .into_iter()
        .map(MemberJson::from)
        .collect();
    Ok(Json(json!({ "members": m })))
}

async fn health(State(h): State<Handle>) -> Result<Json<serde_json::Value>, ApiError> {
    let s = h.status().await?;
    Ok(Json(
        json!({"status": "ok", "has_quorum": s.quorum.has_quorum}),
    ))
}

async fn prometheus(State(h): State<Handle>) -> Result<Response, ApiError> {
    let report = h.metrics().await?;
    let body = metrics::render(&report);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
