//! The `chorus` command-line client: talks to the local agent's HTTP API and prints tables or JSON.

use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;

/// A client error, phrased for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Nothing listens at the API address.
    #[error(
        "no chorus agent answers at {api}: {reason} (is the agent running? point --api or CHORUS_API at it)"
    )]
    NoAgent {
        /// API address tried.
        api: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("{code}: {message}")]
    Api {
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
    },
    /// The agent answered with something unexpected.
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
    /// Reading the value to store failed.
    #[error("cannot read the value from standard input: {0}")]
    Stdin(String),
}

impl CliError {
    /// The process exit code a script can rely on (docs/http-api.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NoAgent { .. } | CliError::Protocol(_) | CliError::Stdin(_) => 1,
            CliError::Api { code, .. } => match code.as_str() {
                "not_found" | "unknown_key" => 3,
                "no_quorum" | "contended" => 4,
                "indeterminate" => 5,
                "bad_request" | "too_large" => 6,
                "conflict" | "stale_token" | "key_is_primary" | "keyring_full" => 7,
                "token_missing" | "token_invalid" | "forbidden" => 10,
                _ => 1,
            },
        }
    }
}

/// How this process authenticates to agents: the `Authorization` header value, set once at start.
static AUTH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Sets the token every request of this process sends: from `token_file` (`--token-file`,
/// `CHORUS_TOKEN_FILE`), else `token` (`CHORUS_TOKEN`). An unreadable file is an error that
/// names it.
pub fn set_token(
    token_file: Option<&std::path::Path>,
    token: Option<String>,
) -> Result<(), String> {
    let secret = match (token_file, token) {
        (Some(f), _) => Some(
            String::from_utf8(crate::auth::read_token(f)?.0)
                .map_err(|_| format!("the token in {} is not text", f.display()))?,
        ),
        (None, Some(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    };
    let _ = AUTH.set(secret.map(|t| format!("Bearer {t}")));
    Ok(())
}

/// The certificate authorities this process trusts for `https://` agents (`--ca-file`), set once
/// at start; `None`: the system's web roots.
static CA: std::sync::OnceLock<Option<Vec<ureq::tls::Certificate<'static>>>> =
    std::sync::OnceLock::new();

/// Trusts the certificates in the PEM file `ca_file` (`--ca-file`, `CHORUS_CA_FILE`) for agents
/// reached by `https://`.
pub fn set_ca(ca_file: Option<&std::path::Path>) -> Result<(), String> {
    let certs = match ca_file {
        None => None,
        Some(f) => {
            let pem = std::fs::read(f)
                .map_err(|e| format!("reading the CA file {}: {e}", f.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!("no PEM certificate in the CA file {}", f.display()));
            }
            Some(certs)
        }
    };
    let _ = CA.set(certs);
    Ok(())
}

/// An HTTP agent for talking to Chorus agents: `timeout` per request (`None`: none), statuses
/// as answers rather than errors, and the trusted CAs for `https://`.
pub fn http_agent(timeout: Option<Duration>) -> ureq::Agent {
    let mut b = ureq::Agent::config_builder()
        .timeout_global(timeout)
        .http_status_as_error(false);
    if let Some(Some(certs)) = CA.get() {
        b = b.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(
                    certs.clone(),
                )))
                .build(),
        );
    }
    b.build().into()
}

/// The base URL for an `--api` value: `host:port` (plain HTTP), or a full `http://` or
/// `https://` URL; and the address part, for messages.
pub fn base_url(api: &str) -> (String, String) {
    let api = api.trim_end_matches('/');
    if let Some(rest) = api.strip_prefix("https://") {
        return (api.to_string(), rest.to_string());
    }
    let rest = api.strip_prefix("http://").unwrap_or(api);
    (format!("http://{rest}"), rest.to_string())
}

/// The `Authorization` header value to send, if a token was given.
pub fn authorization() -> Option<&'static str> {
    AUTH.get().and_then(|a| a.as_deref())
}

/// `req` with the `Authorization` header, if a token was given.
pub fn authorize<B>(req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    match authorization() {
        Some(a) => req.header("authorization", a),
        None => req,
    }
}

/// The raw answer to a request: status, selected headers, body.
pub struct Raw {
    /// HTTP status.
    pub status: u16,
    /// `Chorus-Version`, if present.
    pub version: Option<String>,
    /// `Chorus-Stale: true` was present.
    pub stale: bool,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A client for one agent.
pub struct Client {
    base: String,
    api: String,
    agent: ureq::Agent,
    body_limit: u64,
}

impl Client {
    /// A client for the agent at `api` (`host:port`).
    pub fn new(api: &str) -> Self {
        Self::with_limits(api, Duration::from_secs(10), 64 << 20)
    }

    /// A client whose requests may take `timeout` and bring back `body_limit` bytes (backups).
    pub fn with_limits(api: &str, timeout: Duration, body_limit: u64) -> Self {
        // `--api http://127.0.0.1:7947/` is what Consul and etcd users type: take it as the
        // address it names; `https://` talks TLS.
        let (base, api) = base_url(api);
        Client {
            base,
            api,
            agent: http_agent(Some(timeout)),
            body_limit,
        }
    }

    /// Sends `method` to `path` with an optional body; returns the raw answer or the API's error.
    pub fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Raw, CliError> {
        self.call_with(method, path, body, &[])
    }

    /// Like [`Client::call`], with request headers.
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> Result<Raw, CliError> {
        let url = format!("{}{}", self.base, path);
        let no_agent = |e: ureq::Error| CliError::NoAgent {
            api: self.api.clone(),
            reason: e.to_string(),
        };
        let mut resp = match (method, body) {
            ("PUT", Some(b)) => {
                let mut req = authorize(self.agent.put(&url));
                for (k, v) in headers {
                    req = req.header(*k, v.as_str());
                }
                req.send(&b[..]).map_err(no_agent)?
            }
            ("POST", b) => {
                let mut req = authorize(self.agent.post(&url));
                for (k, v) in headers {
                    req = req.header(*k, v.as_str());
                }
                req.send(&b.unwrap_or_default()[..]).map_err(no_agent)?
            }
            ("DELETE", _) => {
                let mut req = authorize(self.agent.delete(&url));
                for (k, v) in headers {
                    req = req.header(*k, v.as_str());
                }
                req.call().map_err(no_agent)?
            }
            _ => {
                let mut req = authorize(self.agent.get(&url));
                for (k, v) in headers {
                    req = req.header(*k, v.as_str());
                }
                req.call().map_err(no_agent)?
            }
        };
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let version = header("chorus-version");
        let stale = header("chorus-stale").as_deref() == Some("true");
        let body = resp
            .body_mut()
            .with_config()
            .limit(self.body_limit)
            .read_to_vec()
            .map_err(|e| CliError::Protocol(e.to_string()))?;
        if !(200..300).contains(&status) {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let code = v["error"]["code"].as_str().unwrap_or("error").to_string();
            let message = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(CliError::Api { code, message });
        }
        Ok(Raw {
            status,
            version,
            stale,
            body,
        })
    }

    /// GETs `path` and returns the JSON body, or the API's error.
    pub fn get_json(&self, path: &str) -> Result<Value, CliError> {
        let mut resp = authorize(self.agent.get(format!("{}{}", self.base, path)))
            .call()
            .map_err(|e| CliError::NoAgent {
                api: self.api.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| CliError::Protocol(e.to_string()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| CliError::Protocol(format!("{e}: {text}")))?;
        if !status.is_success() {
            let code = v["error"]["code"].as_str().unwrap_or("error").to_string();
            let message = v["error"]["message"].as_str().unwrap_or(&text).to_string();
            return Err(CliError::Api { code, message });
        }
        Ok(v)
    }
}

/// Values up to this size are sent without asking the agent for its limit first.
const SMALL_VALUE: usize = 64 << 10;

/// Refuses a value over the agent's `store.max_value_bytes` before sending it (`too_large`, exit
/// 6, with both sizes). Sent anyway, the agent answers 413 as soon as it sees the length and
/// closes the connection while a fast client is still writing, which the client would see as a
/// broken pipe: "agent down" for what is a too large value. Values up to 64 KiB are sent as they
/// are (every limit is larger).
pub fn check_value_size(c: &Client, size: usize) -> Result<(), CliError> {
    if size <= SMALL_VALUE {
        return Ok(());
    }
    let status = c.get_json("/v1/status")?;
    match status["limits"]["max_value_bytes"].as_u64() {
        Some(max) if size as u64 > max => Err(CliError::Api {
            code: "too_large".into(),
            message: format!(
                "the value is {size} bytes, over this agent's store.max_value_bytes ({max})"
            ),
        }),
        _ => Ok(()),
    }
}

/// A JSON value as plain text: strings without quotes, null as `-`.
pub fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Renders `/v1/members` as a table.
pub fn members_table(v: &Value) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "ID".into(),
        "STATE".into(),
        "DC".into(),
        "GOSSIP".into(),
        "API".into(),
        "GEN".into(),
    ]];
    // By name, as people look members up (the API lists them by id).
    let mut members: Vec<&Value> = v["members"].as_array().into_iter().flatten().collect();
    members.sort_by_key(|m| (s(&m["name"]), s(&m["id"])));
    for m in members {
        let mut name = s(&m["name"]);
        if m["is_self"].as_bool() == Some(true) {
            name.push_str(" *");
        }
        if m["leader"].as_bool() == Some(true) {
            name.push_str(" (leader)");
        }
        rows.push(vec![
            name,
            s(&m["id"]),
            s(&m["state"]),
            s(&m["datacenter"]),
            s(&m["gossip_addr"]),
            s(&m["api_addr"]),
            s(&m["generation"]),
        ]);
    }
    table(&rows)
}

/// Renders `/v1/status` for people.
pub fn status_text(v: &Value) -> String {
    let q = &v["quorum"];
    let mut out = String::new();
    let node = &v["node"];
    let _ = writeln!(
        out,
        "node:        {} ({}) in {}",
        s(&node["name"]),
        s(&node["id"]),
        s(&node["datacenter"])
    );
    let _ = writeln!(out, "cluster:     {}", s(&v["cluster"]));
    let _ = writeln!(
        out,
        "gossip:      {} (generation {})",
        s(&node["gossip_addr"]),
        s(&node["generation"])
    );
    let has = q["has_quorum"].as_bool() == Some(true);
    if let Some(dcs) = q["datacenters"].as_array() {
        let counted = dcs.iter().filter(|d| d["counted"] == true).count();
        let _ = writeln!(
            out,
            "quorum:      {} ({} of {} datacenters reached, {} required) since {}",
            if has { "yes" } else { "NO" },
            counted,
            dcs.len(),
            s(&q["required_datacenters"]),
            s(&q["since"]),
        );
        for d in dcs {
            let _ = writeln!(
                out,
                "  {:<12} {} of {} votes reachable, {} required{}",
                s(&d["name"]),
                s(&d["reachable"]),
                s(&d["configured"]),
                s(&d["required"]),
                if d["counted"] == true {
                    ""
                } else {
                    "  (not reached)"
                }
            );
        }
    } else {
        let _ = writeln!(
            out,
            "quorum:      {} ({} of {} votes reachable, {} required) since {}",
            if has { "yes" } else { "NO" },
            s(&q["reachable_votes"]),
            s(&q["total_votes"]),
            s(&q["required_votes"]),
            s(&q["since"]),
        );
    }
    if let Some(d) = q["disagreeing_members"]
        .as_object()
        .filter(|d| !d.is_empty())
    {
        let list: Vec<String> = d.iter().map(|(n, r)| format!("{n} ({})", s(r))).collect();
        let _ = writeln!(
            out,
            "WARNING:     these members count quorum differently (required/total): {}",
            list.join(", ")
        );
    }
    let m = &v["members"];
    let _ = writeln!(
        out,
        "members:     {} alive, {} suspect, {} failed, {} left",
        s(&m["alive"]),
        s(&m["suspect"]),
        s(&m["failed"]),
        s(&m["left"])
    );
    let list = |k: &str| {
        let names: Vec<String> = v[k].as_array().into_iter().flatten().map(s).collect();
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(", ")
        }
    };
    let _ = writeln!(out, "reachable:   {}", list("reachable"));
    let _ = writeln!(out, "unreachable: {}", list("unreachable"));
    let c = &v["catch_up"];
    let store = if v["catching_up"].as_bool() != Some(true) {
        "current".to_string()
    } else if c["lost_writes"].as_bool() == Some(true) {
        format!(
            "CATCHING UP, not voting (its log was lost; {} of {} votes synced)",
            s(&c["votes"]),
            s(&c["needed_votes"])
        )
    } else {
        format!(
            "CATCHING UP, local reads stale ({} of {} votes synced)",
            s(&c["votes"]),
            s(&c["needed_votes"])
        )
    };
    let _ = writeln!(out, "store:       {store}");
    out
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |x| x.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, x)| format!("{x:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Percent-encodes a path segment (keys may hold `/`, spaces, anything).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_table_is_sorted_by_name() {
        let v = json!({"members": [
            {"name": "zeta", "id": "01"}, {"name": "alpha", "id": "02"}, {"name": "mid", "id": "03"}
        ]});
        let t = members_table(&v);
        let names: Vec<&str> = t
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(names, ["alpha", "mid", "zeta"]);
    }

    #[test]
    fn members_table_aligns_and_marks_self() {
        let v = json!({"members": [
            {"name": "a", "id": "01", "state": "alive", "datacenter": "dc1", "gossip_addr": "10.0.0.1:7946",
             "api_addr": null, "generation": 3, "is_self": true},
            {"name": "bbbb", "id": "02", "state": "failed", "datacenter": "dc1", "gossip_addr": "10.0.0.2:7946",
             "api_addr": "10.0.0.2:7947", "generation": 1, "is_self": false, "leader": true}
        ]});
        let t = members_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("a *"));
        assert!(lines[2].starts_with("bbbb (leader)"), "{}", lines[2]);
        assert!(lines[2].contains("failed"));
        assert_eq!(lines[0].find("ID"), lines[1].find("01"));
    }

    #[test]
    fn status_text_says_whether_the_store_is_current() {
        let mut v = json!({"node": {}, "quorum": {"has_quorum": true}, "members": {},
            "catching_up": false, "catch_up": null});
        assert!(status_text(&v).contains("store:       current"));
        v["catching_up"] = json!(true);
        v["catch_up"] = json!({"lost_writes": true, "votes": 1, "needed_votes": 2});
        let t = status_text(&v);
        assert!(
            t.contains("CATCHING UP, not voting") && t.contains("1 of 2 votes"),
            "{t}"
        );
        v["catch_up"]["lost_writes"] = json!(false);
        assert!(status_text(&v).contains("CATCHING UP, local reads stale"));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("a/b c?d"), "a/b%20c%3Fd");
        assert_eq!(encode_segment("ü"), "%C3%BC");
    }

    #[test]
    fn no_agent_message_names_the_address() {
        let c = Client::new("127.0.0.1:1");
        let e = c.get_json("/v1/status").unwrap_err().to_string();
        assert!(e.contains("no chorus agent answers at 127.0.0.1:1"), "{e}");
    }
}
