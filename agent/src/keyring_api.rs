//! `/v1/keyring`: list this node's keys; install, use and remove a key on every live member.
//!
//! `POST /v1/keyring/install`, `/use` and `/remove` take `{"key": KEY}`: the key itself (base64,
//! as `chorus keygen` prints it), or for `use` and `remove` also its 8-hex-digit id. The answer
//! lists every node asked and what it did; `complete` is true when all did it. A step of a
//! rotation is finished only when its report is complete: repeat it (every operation is
//! idempotent) once a node reported `no_answer` is back.
//!
//! This node refusing (an unknown key, removing the primary, a full ring) answers 404/409 and
//! nothing changed anywhere.

use crate::api::ApiError;
use crate::driver::Handle;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use membership::{KeyId, KeyringError, KeyringOp};
use serde::Deserialize;
use serde_json::json;

/// The body of the three operations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// The key (base64) or, for use and remove, its id.
    pub key: String,
}

/// A key id, or the id of a key given whole.
fn key_id(k: &str) -> Result<KeyId, ApiError> {
    if let Ok(id) = k.trim().parse::<KeyId>() {
        return Ok(id);
    }
    crate::config::parse_key("key", k)
        .map(|k| k.id())
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{} (or give the key's 8-hex-digit id, as `chorus keyring list` shows)",
                e.to_string().replace("invalid value for `key`: ", "key: ")
            ))
        })
}

fn refused(e: KeyringError) -> ApiError {
    let status = match e {
        KeyringError::UnknownKey(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    ApiError::new(status, e.code(), e.to_string())
}

async fn run(h: Handle, op: KeyringOp) -> Result<Json<serde_json::Value>, ApiError> {
    let report = h.keyring(op).await?.map_err(refused)?;
    Ok(Json(serde_json::to_value(report).map_err(|e| {
        ApiError::internal(format!("encoding the report: {e}"))
    })?))
}

/// `GET /v1/keyring`: this node's keys, primary first, with packets opened under each since it
/// started (an old key that opens nothing any more is unused).
pub async fn list(State(h): State<Handle>) -> Result<Json<serde_json::Value>, ApiError> {
    let keys = h.keyring_list().await?;
    let primary = keys.iter().find(|k| k.primary).map(|k| k.id.to_string());
    let keys: Vec<_> = keys
        .iter()
        .map(|k| json!({"id": k.id.to_string(), "primary": k.primary, "opened": k.opened}))
        .collect();
    Ok(Json(json!({ "primary": primary, "keys": keys })))
}

/// `POST /v1/keyring/install`: every node accepts the key too.
pub async fn install(
    State(h): State<Handle>,
    Json(b): Json<KeyBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let key = crate::config::parse_key("key", &b.key).map_err(|e| {
        ApiError::bad_request(
            e.to_string().replace("invalid value for `key`: ", "key: ")
                + " (install takes the key itself, as `chorus keygen` prints it)",
        )
    })?;
    run(h, KeyringOp::Install(key)).await
}

/// `POST /v1/keyring/use`: every node seals with the key.
pub async fn use_key(
    State(h): State<Handle>,
    Json(b): Json<KeyBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    run(h, KeyringOp::Use(key_id(&b.key)?)).await
}

/// `POST /v1/keyring/remove`: no node accepts the key any more.
pub async fn remove(
    State(h): State<Handle>,
    Json(b): Json<KeyBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    run(h, KeyringOp::Remove(key_id(&b.key)?)).await
}
