//! Timelines: one line per event per node, in fixed columns, easy to diff.

use std::fmt::Write;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    pub t: u64,
    /// `a`, `b`, or `--` for the world (faults, client, verdicts).
    pub who: &'static str,
    pub text: String,
}

pub fn render(lines: &[TraceLine]) -> String {
    let mut s = String::new();
    for l in lines {
        let _ = writeln!(s, "{:>4}.{:03}s  {:<2}  {}", l.t / 1000, l.t % 1000, l.who, l.text);
    }
    s
}
