//! Refused datagrams, counted by reason and logged without letting a flood write the disk
//! full: the first refusal of a quiet spell is logged at once, then at most one summary line
//! per window ("dropped 20 000 datagrams from 198.18.x.y in the last 10 s: 19 000 bad
//! authentication tag, ..."). Anyone on the LAN can send them, key or not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One summary line per this much time at most.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    /// Since the daemon started, by reason (`status --json`).
    total: BTreeMap<String, u64>,
    /// In the current window, by reason, not logged yet.
    pending: BTreeMap<String, u64>,
    window_start: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct DropLog {
    state: Mutex<State>,
}

impl DropLog {
    /// Counts one refused datagram from `from`; returns the line to log now, if any.
    pub fn note(&self, from: SocketAddr, why: &str, now: Instant) -> Option<String> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s.total.entry(why.to_string()).or_default() += 1;
        match s.window_start {
            // Quiet until now: say it at once, and open a window.
            None => {
                s.window_start = Some(now);
                Some(format!("dropped a datagram from {from}: {why}"))
            }
            Some(start) => {
                *s.pending.entry(why.to_string()).or_default() += 1;
                if now.duration_since(start) < WINDOW {
                    return None;
                }
                let line = summary(from, &s.pending, now.duration_since(start));
                s.pending.clear();
                s.window_start = Some(now);
                Some(line)
            }
        }
    }

    /// The pending summary once its window is over (called now and then, so the last burst
    /// of a flood is reported even if nothing follows it); a quiet window closes the spell.
    pub fn flush(&self, from: SocketAddr, now: Instant) -> Option<String> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let start = s.window_start?;
        if now.duration_since(start) < WINDOW {
            return None;
        }
        let line = (!s.pending.is_empty()).then(|| summary(from, &s.pending, now.duration_since(start)));
        s.pending.clear();
        s.window_start = if line.is_some() { Some(now) } else { None };
        line
    }

    /// Every refusal since start, by reason.
    pub fn totals(&self) -> BTreeMap<String, u64> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total.clone()
    }
}

fn summary(from: SocketAddr, pending: &BTreeMap<String, u64>, over: Duration) -> String {
    let n: u64 = pending.values().sum();
    let mut by: Vec<(&String, &u64)> = pending.iter().collect();
    by.sort_by(|a, b| b.1.cmp(a.1));
    let parts: Vec<String> = by.iter().map(|(why, k)| format!("{k} {why}")).collect();
    format!("dropped {n} datagrams from {from} in the last {} s: {}", over.as_secs().max(1), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_one_line_then_one_summary_per_window() {
        let log = DropLog::default();
        let from: SocketAddr = "198.18.0.9:7400".parse().expect("addr");
        let t0 = Instant::now();
        let mut lines = Vec::new();
        for i in 0..20_000u64 {
            let why = if i % 20 == 19 { "replayed or reordered" } else { "bad authentication tag" };
            // 20 000 datagrams over 10.5 s.
            lines.extend(log.note(from, why, t0 + Duration::from_micros(i * 525)));
        }
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], "dropped a datagram from 198.18.0.9:7400: bad authentication tag");
        assert!(
            lines[1].starts_with("dropped ") && lines[1].contains("from 198.18.0.9:7400 in the last 10 s: ") && lines[1].contains("bad authentication tag, "),
            "{}",
            lines[1]
        );
        let rest = log.flush(from, t0 + Duration::from_secs(25));
        assert!(rest.is_some_and(|l| l.contains("in the last")), "the tail of the flood is reported");
        assert_eq!(log.flush(from, t0 + Duration::from_secs(40)), None, "then quiet");
        assert_eq!(log.totals().values().sum::<u64>(), 20_000);
        assert_eq!(log.totals()["replayed or reordered"], 1000);
    }
}
