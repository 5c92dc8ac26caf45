//! `chorus monitor`: the agent's own log, followed live through the API, for hosts where the
//! journal is not at hand (a container, a colleague's machine, a support session).
//!
//! The log writer hands every formatted line to stderr as before and, while someone follows
//! `GET /v1/monitor`, to a broadcast channel too: with nobody following, the cost is one
//! uncontended lock (the channel's follower count) per line. A follower sees the lines the
//! agent's `log.level` lets through, in the agent's `log.format`. A follower too slow for the
//! 1,024 lines the channel holds gets a `gap` event saying how many lines it missed, never
//! silence.

use axum::response::sse::{Event, KeepAlive, Sse};
use std::convert::Infallible;
use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// Lines a follower may fall behind by before it is told of a gap.
const BACKLOG: usize = 1024;

fn lines() -> &'static broadcast::Sender<String> {
    static LINES: OnceLock<broadcast::Sender<String>> = OnceLock::new();
    LINES.get_or_init(|| broadcast::channel(BACKLOG).0)
}

/// The log writer: stderr, and the followers of `/v1/monitor` when there are any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tee;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Tee {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One log record being formatted; written out whole when dropped, so that lines of
/// concurrent records never interleave.
#[derive(Debug)]
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let _ = std::io::stderr().write_all(&self.0);
        let tx = lines();
        if tx.receiver_count() > 0 {
            let text = String::from_utf8_lossy(&self.0);
            for l in text.lines().filter(|l| !l.is_empty()) {
                // Carriage returns would end an SSE line early.
                let _ = tx.send(l.replace('\r', " "));
            }
        }
    }
}

/// `GET /v1/monitor`: the agent's log lines as Server-Sent Events of type `log`; `gap`
/// (data `{"missed_lines": N}`) where a slow follower lost some.
pub async fn monitor() -> Sse<impl futures_core::Stream<Item = Result<Event, Infallible>> + Send> {
    let rx = lines().subscribe();
    tracing::info!(
        followers = lines().receiver_count(),
        "a client follows the log (chorus monitor)"
    );
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(line) => Event::default().event("log").data(line),
            Err(RecvError::Lagged(n)) => Event::default()
                .event("gap")
                .data(serde_json::json!({ "missed_lines": n }).to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The arguments of `chorus monitor`.
#[derive(Debug, Clone, clap::Args)]
pub struct MonitorArgs {
    /// The agent's API address.
    #[arg(long, env = "CHORUS_API", default_value = "127.0.0.1:7947")]
    pub api: String,
}

/// Runs `chorus monitor`: prints the agent's log lines as they come, until interrupted;
/// reconnects when the agent restarts (saying so once), and says when lines were missed.
pub fn run(a: MonitorArgs) -> ExitCode {
    let url = format!("{}/v1/monitor", crate::cli::base_url(&a.api).0);
    let mut kind = String::new();
    crate::events_cli::follow_lines(
        "chorus monitor",
        &url,
        &mut kind,
        |_| None,
        |kind, line| {
            if let Some(k) = line.strip_prefix("event:") {
                *kind = k.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                let d = d.strip_prefix(' ').unwrap_or(d);
                if kind == "gap" {
                    let v: serde_json::Value = serde_json::from_str(d).unwrap_or_default();
                    eprintln!("chorus monitor: {} log lines missed", v["missed_lines"]);
                } else {
                    println!("{d}");
                }
            } else if line.is_empty() {
                kind.clear();
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reaches_followers_whole_one_event_per_line() {
        let mut rx = lines().subscribe();
        {
            let mut l = Line(Vec::new());
            write!(l, "WARN part one ").unwrap();
            writeln!(l, "part\rtwo").unwrap();
            writeln!(l, "second line").unwrap();
        }
        assert_eq!(rx.try_recv().unwrap(), "WARN part one part two");
        assert_eq!(rx.try_recv().unwrap(), "second line");
        assert!(rx.try_recv().is_err(), "nothing more");
    }
}
