//! Input limits and the store's error type.

use serde::Serialize;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Default largest value (`store.max_value_bytes`).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;
/// Longest store name.
pub const MAX_STORE_NAME: usize = 64;

/// Why a store operation failed; each variant maps to a stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum StoreError {
    /// The request is malformed (bad key, bad store name, bad TTL...).
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// The value is larger than the store allows.
    #[error("value is {size} bytes; the limit is {max}")]
    TooLarge {
        /// Size given.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// No such key, or no such store.
    #[error("{message}")]
    NotFound {
        /// What was not found.
        message: String,
    },
    /// This node cannot reach a quorum of votes.
    #[error("no quorum: {}", no_quorum_text(*reachable_votes, *required_votes, datacenters))]
    NoQuorum {
        /// Votes reachable.
        reachable_votes: u32,
        /// Votes required (in `datacenters` mode, the fewest of any quorum).
        required_votes: u32,
        /// In `datacenters` mode, each configured datacenter as this node reaches it.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        datacenters: Vec<membership::DatacenterReach>,
    },
    /// The quorum round did not complete in time: the write may or may not have taken effect.
    #[error("indeterminate: the quorum round timed out; the write may or may not take effect")]
    Indeterminate,
    /// This node cannot write its log (disk full, I/O error): it takes no writes until it can.
    #[error("{message}")]
    Storage {
        /// What failed.
        message: String,
    },
}

/// The message of a `no_quorum`: votes, or in `datacenters` mode the datacenters reached.
pub fn no_quorum_text(
    reachable: u32,
    required: u32,
    datacenters: &[membership::DatacenterReach],
) -> String {
    if datacenters.is_empty() {
        return format!("{reachable} of the {required} required votes reachable");
    }
    let counted: Vec<&str> = datacenters
        .iter()
        .filter(|d| d.counted)
        .map(|d| d.name.as_str())
        .collect();
    let each: Vec<String> = datacenters
        .iter()
        .map(|d| {
            format!(
                "{} {} of {} votes (needs {})",
                d.name, d.reachable, d.configured, d.required
            )
        })
        .collect();
    format!(
        "this node reaches {} of the {} datacenters a quorum needs (of {}): {}{}",
        counted.len(),
        datacenters.len() / 2 + 1,
        datacenters.len(),
        if counted.is_empty() {
            "none".to_string()
        } else {
            counted.join(", ")
        },
        format_args!("; {}", each.join(", "))
    )
}

impl StoreError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::BadRequest { .. } => "bad_request",
            StoreError::TooLarge { .. } => "too_large",
            StoreError::NotFound { .. } => "not_found",
            StoreError::NoQuorum { .. } => "no_quorum",
            StoreError::Indeterminate => "indeterminate",
            StoreError::Storage { .. } => "storage",
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        StoreError::BadRequest {
            message: message.into(),
        }
    }
}

/// Checks a store name: `[a-z0-9_-]{1,64}`.
pub fn check_store_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_STORE_NAME {
        return Err(StoreError::bad(format!(
            "store name must be 1 to {MAX_STORE_NAME} bytes, got {}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(StoreError::bad(format!(
            "store name {name:?} has {c:?}; allowed are a-z, 0-9, '_' and '-'"
        )));
    }
    Ok(())
}

/// Checks a key: non-empty UTF-8 of at most 1 KiB.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::bad("key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::bad(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value's size against the store's limit.
pub fn check_value(len: usize, max: usize) -> Result<(), StoreError> {
    if len > max {
        return Err(StoreError::TooLarge { size: len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keys_values() {
        assert!(check_store_name("orders_v2-eu").is_ok());
        for bad in ["", "Orders", "a b", "ä", &"x".repeat(65)] {
            assert_eq!(
                check_store_name(bad).unwrap_err().code(),
                "bad_request",
                "{bad:?}"
            );
        }
        assert!(check_key("a/b/ü").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(1025)).is_err());
        assert!(check_value(10, 10).is_ok());
        assert_eq!(
            check_value(11, 10),
            Err(StoreError::TooLarge { size: 11, max: 10 })
        );
    }
}
