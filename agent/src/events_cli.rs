//! `chorus events`: follows the agent's event stream, reconnecting with `Last-Event-ID` so that
//! nothing is missed (or a `gap` is said).

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

/// The arguments of `chorus events`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// Only these types (repeatable), e.g. `--type member_failed --type quorum_lost`.
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Print each event's JSON, one per line.
    #[arg(long)]
    pub json: bool,
    /// Start after this sequence number (default: only new events).
    #[arg(long)]
    pub since: Option<u64>,
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    pub api: String,
}

/// One line for people.
fn human(v: &serde_json::Value) -> String {
    let t = v["type"].as_str().unwrap_or("event");
    let detail = if let Some(m) = v.get("member") {
        format!(
            "{} {} ({})",
            m["name"].as_str().unwrap_or(""),
            m["id"].as_str().unwrap_or(""),
            m["addr"].as_str().unwrap_or("")
        )
    } else if let Some(q) = v.get("quorum") {
        format!(
            "{} of {} required votes reachable",
            q["reachable_votes"], q["required_votes"]
        )
    } else if t == "key_changed" {
        format!(
            "{}/{} {}{}",
            v["store"].as_str().unwrap_or(""),
            v["key"].as_str().unwrap_or(""),
            v["version"].as_str().unwrap_or(""),
            if v["deleted"] == true {
                " (deleted)"
            } else {
                ""
            }
        )
    } else if t == "gap" {
        format!(
            "events {} to {} were missed",
            v["missed_from"], v["missed_to"]
        )
    } else {
        let mut m = v.clone();
        if let Some(o) = m.as_object_mut() {
            for k in ["seq", "time_ms", "type"] {
                o.remove(k);
            }
        }
        if m.as_object().is_some_and(|o| o.is_empty()) {
            String::new()
        } else {
            m.to_string()
        }
    };
    format!(
        "{:>6} {:<20} {detail}",
        v["seq"].as_u64().map_or("-".to_string(), |s| s.to_string()),
        t
    )
}

/// Runs `chorus events` until interrupted.
pub fn run(a: EventsArgs) -> ExitCode {
    let query = if a.types.is_empty() {
        String::new()
    } else {
        format!("?type={}", a.types.join(","))
    };
    let url = format!("{}/v1/events{query}", crate::cli::base_url(&a.api).0);
    follow(&url, a.since, a.json)
}

/// Follows the Server-Sent Events at `url` until interrupted, reconnecting with
/// `Last-Event-ID`; prints each event as JSON or as a line for people.
fn follow(url: &str, since: Option<u64>, json: bool) -> ExitCode {
    let mut st = (since, String::new());
    follow_lines(
        "chorus events",
        url,
        &mut st,
        |st| st.0,
        |(last, data), line| {
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if let Some(id) = line.strip_prefix("id:") {
                *last = id.trim().parse().ok().or(*last);
            } else if line.is_empty() && !data.is_empty() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(data) {
                    if json {
                        println!("{v}");
                    } else {
                        println!("{}", human(&v));
                    }
                }
                data.clear();
            }
        },
    )
}

/// Follows a Server-Sent Events stream at `url` until interrupted: hands each line to
/// `on_line`, and reconnects (every 500 ms, saying so once per outage) when the agent goes away,
/// sending `Last-Event-ID` when `last_id` gives one. An API error ends it with exit status 6.
pub fn follow_lines<S>(
    who: &str,
    url: &str,
    st: &mut S,
    last_id: impl Fn(&S) -> Option<u64>,
    mut on_line: impl FnMut(&mut S, &str),
) -> ExitCode {
    let agent = crate::cli::http_agent(None);
    let mut warned = false;
    loop {
        let mut req = crate::cli::authorize(agent.get(url));
        if let Some(l) = last_id(st) {
            req = req.header("last-event-id", l.to_string());
        }
        match req.call() {
            Ok(mut resp) if resp.status() == 200 => {
                warned = false;
                let reader = std::io::BufReader::new(resp.body_mut().as_reader());
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    on_line(st, &line);
                }
            }
            Ok(mut resp) => {
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                eprintln!("error: {body}");
                return ExitCode::from(6);
            }
            Err(e) => {
                if !warned {
                    eprintln!("{who}: {e}; reconnecting");
                    warned = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The arguments of `chorus watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The store.
    pub store: String,
    /// The key to watch (prints each new value).
    #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
    pub key: Option<String>,
    /// Watch every key under this prefix instead (prints each change).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Print JSON (a value in base64).
    #[arg(long)]
    pub json: bool,
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    pub api: String,
}

/// Runs `chorus watch` until interrupted: blocking reads of one key, or a prefix's changes.
pub fn watch(a: WatchArgs) -> ExitCode {
    use crate::cli::encode_segment as enc;
    use base64::Engine;
    if let Some(prefix) = &a.prefix {
        let url = format!(
            "{}/v1/watch/{}?prefix={}",
            crate::cli::base_url(&a.api).0,
            enc(&a.store),
            enc(prefix)
        );
        return follow(&url, None, a.json);
    }
    let key = a.key.clone().unwrap_or_default();
    let c = crate::cli::Client::with_limits(&a.api, Duration::from_secs(400), 64 << 20);
    let path = format!("/v1/kv/{}/{}", enc(&a.store), enc(&key));
    let mut index: Option<String> = None;
    loop {
        let q = match &index {
            None => path.clone(),
            Some(i) => format!("{path}?index={}&wait=5m", enc(i)),
        };
        let (version, value) = match c.call("GET", &q, None) {
            Ok(r) => (r.version.unwrap_or_default(), Some(r.body)),
            Err(crate::cli::CliError::Api { code, .. }) if code == "not_found" => {
                ("0".to_string(), None)
            }
            Err(e) => {
                eprintln!("chorus watch: {e}; trying again");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if index.as_deref() != Some(version.as_str()) {
            if a.json {
                let v = value
                    .as_ref()
                    .map(|v| base64::engine::general_purpose::STANDARD.encode(v));
                println!("{}", serde_json::json!({ "version": version, "value": v }));
            } else {
                match &value {
                    Some(v) => println!("{}", String::from_utf8_lossy(v)),
                    None => println!("(no value)"),
                }
            }
            index = Some(version);
        }
    }
}
