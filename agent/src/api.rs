//! The HTTP API: status, members, health and metrics. Errors are JSON with a stable code.

use crate::driver::{Gone, Handle, StatusReport};
use crate::metrics;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use membership::{MemberState, MemberView};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};
use store::{Consistency, Reply, Request, StoreError};

/// An API error: an HTTP status, a stable machine-readable code, and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: serde_json::Map::new(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A bug in the agent (an answer that cannot happen).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A structured field next to the code and the message.
    pub(crate) fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// A request body that could not be read: too large, or broken off.
    pub(crate) fn from_body(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let max = MAX_VALUE_BYTES.load(std::sync::atomic::Ordering::Relaxed);
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the value is larger than store.max_value_bytes ({max})"),
            )
            .with("max", json!(max))
        } else {
            ApiError::bad_request(format!("cannot read the request body: {r}"))
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::NoQuorum { .. } => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Indeterminate => StatusCode::GATEWAY_TIMEOUT,
            StoreError::Storage { .. } => StatusCode::INSUFFICIENT_STORAGE,
        };
        let mut err = ApiError::new(status, e.code(), e.to_string());
        // Structured fields (reachable_votes, required_votes, size, max) next to the code.
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&e) {
            err.extra = map
                .into_iter()
                .filter(|(k, _)| k != "code" && k != "message")
                .collect();
        }
        err
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
        let mut obj = self.extra;
        obj.insert("code".into(), json!(self.code));
        obj.insert("message".into(), json!(self.message));
        let body = json!({ "error": obj });
        (self.status, Json(body)).into_response()
    }
}

/// `store.max_value_bytes` as the router enforces it, for body rejections (which carry no state).
static MAX_VALUE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The API router over a driver handle; request bodies are capped just above `max_value_bytes`.
/// Every request passes `tokens` first (see [`crate::auth`]).
pub fn router(
    handle: Handle,
    max_value_bytes: usize,
    tokens: std::sync::Arc<crate::auth::Tokens>,
) -> Router {
    MAX_VALUE_BYTES.store(max_value_bytes, std::sync::atomic::Ordering::Relaxed);
    Router::new()
        .route("/v1/kv/{store}", get(kv_list))
        .route("/v1/kv/{store}/", axum::routing::any(empty_key))
        .route(
            "/v1/kv/{store}/{*key}",
            get(kv_get).put(kv_put).delete(kv_delete),
        )
        .route(
            "/v1/lock/{name}",
            get(crate::lock_api::inspect)
                .put(crate::lock_api::acquire)
                .delete(crate::lock_api::release),
        )
        .route("/v1/leader", get(crate::lock_api::leader))
        .route(
            "/v1/session",
            axum::routing::put(crate::session_api::create),
        )
        .route(
            "/v1/session/{id}",
            get(crate::session_api::inspect).delete(crate::session_api::destroy),
        )
        .route(
            "/v1/session/{id}/renew",
            axum::routing::post(crate::session_api::renew),
        )
        .route(
            "/v1/election/{name}",
            get(crate::election_api::observe)
                .put(crate::election_api::campaign)
                .delete(crate::election_api::resign),
        )
        .route(
            "/v1/election/{name}/proclaim",
            axum::routing::post(crate::election_api::proclaim),
        )
        .route(
            "/v1/election/{name}/renew",
            axum::routing::post(crate::election_api::renew),
        )
        .route("/v1/events", get(crate::events_api::events))
        .route("/v1/leave", axum::routing::post(leave))
        .route("/v1/join", axum::routing::post(join))
        .route("/v1/force-leave", axum::routing::post(force_leave))
        .route("/v1/monitor", get(crate::monitor::monitor))
        .route("/v1/watch/{store}", get(crate::watch_api::watch))
        .route(
            "/v1/lock/{name}/renew",
            axum::routing::post(crate::lock_api::renew),
        )
        .route(
            "/v1/strong/{*key}",
            get(crate::strong_api::get)
                .put(crate::strong_api::put)
                .delete(crate::strong_api::delete),
        )
        .layer(DefaultBodyLimit::max(max_value_bytes + 1))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .route("/v1/status", get(status))
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/members", get(members))
        .route("/v1/health", get(health))
        .route("/v1/keyring", get(crate::keyring_api::list))
        .route(
            "/v1/keyring/install",
            axum::routing::post(crate::keyring_api::install),
        )
        .route(
            "/v1/keyring/use",
            axum::routing::post(crate::keyring_api::use_key),
        )
        .route(
            "/v1/keyring/remove",
            axum::routing::post(crate::keyring_api::remove),
        )
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            crate::auth::guard,
        ))
        .layer(axum::middleware::from_fn(crate::api_metrics::record))
        .layer(axum::Extension(Limits { max_value_bytes }))
        .with_state(handle)
}

/// `/v1/kv/STORE/` with nothing after the slash.
async fn empty_key(Path(store): Path<String>) -> ApiError {
    ApiError::bad_request(format!(
        "the key is empty: /v1/kv/{store}/KEY takes a key of 1 to {} bytes",
        store::limits::MAX_KEY_BYTES
    ))
}

/// A known endpoint asked with a method it does not take: 405 with the usual JSON error.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {} (see docs/http-api.md)",
            uri.path()
        ),
    )
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
    /// Live members that publish another quorum rule, `{"name": "REQUIRED/TOTAL"}`.
    disagreeing_members: BTreeMap<String, String>,
    /// `votes` or `datacenters`.
    mode: &'static str,
    /// In `datacenters` mode, each configured datacenter as this node reaches it.
    #[serde(skip_serializing_if = "Option::is_none")]
    datacenters: Option<Vec<membership::DatacenterReach>>,
    /// In `datacenters` mode, datacenters a quorum needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    required_datacenters: Option<usize>,
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
    stores: BTreeMap<String, serde_json::Value>,
    catching_up: bool,
    catch_up: Option<serde_json::Value>,
    leader: serde_json::Value,
    /// Limits a client can check before it sends (`chorus kv put` does for large values).
    limits: serde_json::Value,
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
    /// Holds the cluster leader's lease (`/v1/members` reads the leader lock once per call).
    leader: bool,
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
            leader: false,
        }
    }
}

fn status_json(s: StatusReport) -> StatusJson {
    StatusJson {
        limits: serde_json::Value::Null,
        node: s.node.into(),
        cluster: s.cluster,
        quorum: QuorumJson {
            disagreeing_members: s.disagreeing.into_iter().collect(),
            mode: if s.datacenters.is_some() {
                "datacenters"
            } else {
                "votes"
            },
            required_datacenters: s.datacenters.as_ref().map(|d| d.len() / 2 + 1),
            datacenters: s.datacenters,
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
        catching_up: s.catch_up.is_some(),
        leader: json!({
            "candidate": s.leader_candidate,
            "leading": s.leading.is_some(),
            "fencing_token": s.leading,
        }),
        catch_up: s.catch_up.map(|c| {
            json!({
                "lost_writes": c.lost,
                "synced_peers": c.synced_peers,
                "votes": c.votes,
                "needed_votes": c.needed_votes,
                "rounds": c.rounds,
            })
        }),
        stores: s
            .stores
            .into_iter()
            .map(|(n, (entries, hash))| {
                (
                    n,
                    json!({"entries": entries, "digest": format!("{hash:016x}")}),
                )
            })
            .collect(),
    }
}

/// The whole replica in the log format (a backup for `chorus snapshot restore`).
async fn snapshot(State(h): State<Handle>) -> Result<Response, ApiError> {
    let backup = h.snapshot().await?;
    let entries = backup.records.len();
    let bytes =
        tokio::task::spawn_blocking(move || crate::wal_file::encode_snapshot(&backup.records))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("encoding the snapshot failed: {e}"),
                )
            })?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("chorus-entries", HeaderValue::from(entries));
    if backup.catching_up {
        headers.insert("chorus-stale", HeaderValue::from_static("true"));
    }
    Ok((headers, bytes).into_response())
}

async fn status(
    State(h): State<Handle>,
    axum::Extension(limits): axum::Extension<Limits>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = h.status().await?;
    let mut j = status_json(s);
    j.limits = json!({ "max_value_bytes": limits.max_value_bytes });
    Ok(Json(serde_json::to_value(j).expect("status serialises")))
}

/// The request limits the router enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `store.max_value_bytes`.
    pub max_value_bytes: usize,
}

/// Bodies over the value limit are still read (and thrown away) up to this size before the 413
/// goes out, so that a client that writes its whole body before it reads (most do, without
/// `Expect: 100-continue`) gets the answer rather than a broken pipe; beyond it the connection is
/// closed.
const DRAIN_LIMIT: usize = 64 << 20;

/// Refuses a request whose `Content-Length` is over the value limit: 413 `too_large` with `size`
/// and `max`, after draining the body (see [`DRAIN_LIMIT`]; at most 10 s). A body without a
/// length is cut off at the limit by the handlers' body limit instead, and then only `max` is
/// known.
async fn refuse_large_bodies(
    axum::Extension(limits): axum::Extension<Limits>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let size = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match size {
        Some(size) if size > limits.max_value_bytes => {
            if size <= DRAIN_LIMIT {
                use futures_util::StreamExt;
                let mut body = req.into_body().into_data_stream();
                let drain = async { while let Some(Ok(_)) = body.next().await {} };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
            }
            ApiError::from(StoreError::TooLarge {
                size,
                max: limits.max_value_bytes,
            })
            .into_response()
        }
        _ => next.run(req).await,
    }
}

/// `GET /v1/members`: the member list, with the cluster leader marked. The leader comes from one
/// linearizable read of its lock; where that read fails (no quorum here) the list still answers,
/// with `"leader": null` and the reason in `leader_error`.
async fn members(State(h): State<Handle>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut m: Vec<MemberJson> = h
        .members()
        .await?
        .into_iter()
        .map(MemberJson::from)
        .collect();
    let (leader, error) = match crate::lock_api::cluster_leader(&h).await {
        Ok(l) => match l.name_and_id() {
            Some((name, id)) => {
                for x in m.iter_mut().filter(|x| x.id == id) {
                    x.leader = true;
                }
                let v = json!({"name": name, "id": id, "fencing_token": l.token});
                (v, None)
            }
            None => (serde_json::Value::Null, None),
        },
        Err(e) => (serde_json::Value::Null, Some(e.message)),
    };
    let mut out = json!({ "members": m, "leader": leader });
    if let Some(e) = error {
        out["leader_error"] = json!(e);
    }
    Ok(Json(out))
}

async fn health(State(h): State<Handle>) -> Result<Json<serde_json::Value>, ApiError> {
    let s = h.status().await?;
    Ok(Json(
        json!({"status": "ok", "has_quorum": s.quorum.has_quorum}),
    ))
}

/// `GET /metrics`: OpenMetrics to a scraper that accepts it (Prometheus asks for it first), the
/// classic text format (0.0.4) to every other; each with the content type of its body.
async fn prometheus(State(h): State<Handle>, headers: HeaderMap) -> Result<Response, ApiError> {
    let report = h.metrics().await?;
    let body = metrics::render(&report);
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::classic(&body),
        )
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

type Params = Query<BTreeMap<String, String>>;

fn consistency(q: &BTreeMap<String, String>) -> Result<Option<Consistency>, ApiError> {
    q.get("consistency")
        .map(|v| {
            v.parse::<Consistency>().map_err(|_| {
                ApiError::bad_request(format!("consistency={v:?}: use quorum or local"))
            })
        })
        .transpose()
}

/// The answer to a write or delete: its version.
fn written(reply: Reply) -> Result<Json<serde_json::Value>, ApiError> {
    match reply {
        Reply::Written { version } => Ok(Json(json!({ "version": version.to_string() }))),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: Reply) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("unexpected reply {reply:?}"),
    )
}

async fn run_kv(h: &Handle, req: Request) -> Result<Reply, ApiError> {
    Ok(h.kv(req).await??)
}

async fn kv_put(
    State(h): State<Handle>,
    Path((store, key)): Path<(String, String)>,
    Query(q): Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(ApiError::from_body)?;
    let ttl = match q.get("ttl") {
        None => None,
        Some(t) => Some(humantime::parse_duration(t).map_err(|e| {
            ApiError::bad_request(format!("ttl={t:?}: {e} (write e.g. 30s, 5m, 1h)"))
        })?),
    };
    let req = Request::Put {
        store,
        key,
        value: body.to_vec(),
        ttl,
        consistency: consistency(&q)?,
    };
    written(run_kv(&h, req).await?)
}

async fn kv_delete(
    State(h): State<Handle>,
    Path((store, key)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req = Request::Delete {
        store,
        key,
        consistency: consistency(&q)?,
    };
    written(run_kv(&h, req).await?)
}

async fn kv_get(
    State(h): State<Handle>,
    Path((store, key)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let consistency = consistency(&q)?;
    if let Some(index) = q.get("index") {
        let wait = crate::watch_api::wait_param(&q)?;
        return crate::watch_api::blocking_get(&h, store, key, consistency, index, wait, |r| {
            value_response(r?)
        })
        .await;
    }
    let req = Request::Get {
        store,
        key,
        consistency,
    };
    value_response(run_kv(&h, req).await?)
}

/// The answer to a read: the value with its version (and staleness) in headers.
fn value_response(reply: Reply) -> Result<Response, ApiError> {
    match reply {
        Reply::Value {
            value,
            version,
            stale,
        } => {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
                headers.insert("chorus-version", v);
            }
            if stale {
                headers.insert("chorus-stale", HeaderValue::from_static("true"));
            }
            Ok((headers, value).into_response())
        }
        other => Err(unexpected(other)),
    }
}

async fn kv_list(
    State(h): State<Handle>,
    Path(store): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let limit = match q.get("limit") {
        None => 1000,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit={l:?}: use a number from 1 to 100000"))
            })?,
    };
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    match run_kv(
        &h,
        Request::List {
            store,
            prefix,
            limit,
        },
    )
    .await?
    {
        Reply::Keys { keys, stale } => {
            let mut headers = HeaderMap::new();
            if stale {
                headers.insert("chorus-stale", HeaderValue::from_static("true"));
            }
            Ok((headers, Json(json!({ "keys": keys }))).into_response())
        }
        other => Err(unexpected(other)),
    }
}

/// `POST /v1/join?addr=HOST:PORT`: announce this node to another agent's gossip address now (as
/// to a seed), to join its cluster or merge two clusters with the same name and key. Answers once
/// the announce is sent; membership then takes a round trip or two.
async fn join(
    State(h): State<Handle>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let addr = q
        .get("addr")
        .ok_or_else(|| ApiError::bad_request("the query parameter addr (HOST:PORT) is required"))?;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(addr.as_str())
        .await
        .map_err(|e| ApiError::bad_request(format!("addr={addr:?}: {e} (write HOST:PORT)")))?
        .collect();
    if addrs.is_empty() {
        return Err(ApiError::bad_request(format!(
            "addr={addr:?} resolves to nothing"
        )));
    }
    h.join(addrs.clone()).await?;
    let shown: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    Ok(Json(json!({ "announced": shown })))
}

/// `POST /v1/force-leave?name=NAME` (or an id): a failed member is reported `left` on every node
/// now instead of after 24 hours as failed. 409 `conflict` for a member that is not failed, 404
/// `not_found` for an unknown name.
async fn force_leave(
    State(h): State<Handle>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = q.get("name").ok_or_else(|| {
        ApiError::bad_request("the query parameter name (or a member id) is required")
    })?;
    match h.force_leave(who.clone()).await? {
        Ok(id) => Ok(Json(json!({ "left": who, "id": id }))),
        Err(why) if why.starts_with("no member") => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", why))
        }
        Err(why) => Err(ApiError::new(StatusCode::CONFLICT, "conflict", why)),
    }
}

/// `POST /v1/leave`: leave the cluster gracefully and stop the agent, as SIGTERM does.
async fn leave(State(h): State<Handle>) -> Result<Json<serde_json::Value>, ApiError> {
    h.leave().await?;
    Ok(Json(json!({ "leaving": true })))
}
