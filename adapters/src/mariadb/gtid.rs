//! MariaDB GTID positions (`domain-server-seq`, comma separated, one per domain) and the
//! comparisons the adapter needs. Pure and unit-tested.

use std::collections::BTreeMap;

/// One GTID: replication domain, originating server, sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

/// A position: the last GTID of each domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GtidPos(pub BTreeMap<u32, Gtid>);

impl GtidPos {
    /// Parses `@@gtid_current_pos` and friends; an empty string is the empty position.
    pub fn parse(s: &str) -> Result<GtidPos, String> {
        let mut m = BTreeMap::new();
        for g in parse_list(s)? {
            if m.insert(g.domain, g).is_some() {
                return Err(format!("domain {} appears twice in `{s}`", g.domain));
            }
        }
        Ok(GtidPos(m))
    }

    /// The sequence number reached in `domain` (0 when nothing was written there).
    pub fn seq(&self, domain: u32) -> u64 {
        self.0.get(&domain).map_or(0, |g| g.seq)
    }

    /// Domains where we are ahead of `master`: transactions it does not have (errant GTIDs
    /// under gtid_strict_mode). Returns how many sequence numbers we are ahead, summed.
    pub fn ahead_of(&self, master: &GtidPos) -> u64 {
        self.0.values().map(|g| g.seq.saturating_sub(master.seq(g.domain))).sum()
    }

    /// The transactions counted by `ahead_of`, as MariaDB ranges: `domain-server-first..last`
    /// per domain, comma separated (empty when there are none).
    pub fn ahead_ranges(&self, master: &GtidPos) -> String {
        let parts: Vec<String> = self
            .0
            .values()
            .filter(|g| g.seq > master.seq(g.domain))
            .map(|g| {
                let first = master.seq(g.domain) + 1;
                if first == g.seq {
                    format!("{}-{}-{}", g.domain, g.server, g.seq)
                } else {
                    format!("{}-{}-{first}..{}", g.domain, g.server, g.seq)
                }
            })
            .collect();
        parts.join(",")
    }

    /// Every domain at the later of the two positions.
    pub fn merged(&self, other: &GtidPos) -> GtidPos {
        let mut m = self.0.clone();
        for g in other.0.values() {
            if m.get(&g.domain).is_none_or(|h| h.seq < g.seq) {
                m.insert(g.domain, *g);
            }
        }
        GtidPos(m)
    }

    /// Transactions held over every domain: the pair's scalar position (see `Position`).
    pub fn total(&self) -> u64 {
        self.0.values().map(|g| g.seq).sum()
    }
}

/// A comma-separated list of GTIDs, as every MariaDB GTID variable prints them.
fn parse_list(s: &str) -> Result<Vec<Gtid>, String> {
    let one = |part: &str| {
        let f: Vec<&str> = part.split('-').collect();
        let [d, sv, sq] = f[..] else { return Err(format!("`{part}` is not a GTID (domain-server-seq)")) };
        let bad = |what: &str| format!("`{part}`: bad {what}");
        Ok(Gtid {
            domain: d.parse().map_err(|_| bad("domain"))?,
            server: sv.parse().map_err(|_| bad("server id"))?,
            seq: sq.parse().map_err(|_| bad("sequence number"))?,
        })
    };
    s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(one).collect()
}

/// `@@gtid_binlog_state`: the last GTID of every (domain, server) pair in a binary log.
pub fn parse_state(s: &str) -> Result<Vec<Gtid>, String> {
    parse_list(s)
}

/// Errant transactions of server `me`: in each domain, its own transactions after the last
/// point both logs share — the later of the last of its own the Master holds and the last it
/// received from another server (both from `@@gtid_binlog_state`). Sequence numbers run on
/// across a domain and a server's own transactions since that point were written in one
/// stretch, so the difference counts them. Returns the count and the ranges.
pub fn errant(mine: &[Gtid], masters: &[Gtid], me: u32) -> (u64, String) {
    let mut count = 0;
    let mut ranges = Vec::new();
    for g in mine.iter().filter(|g| g.server == me) {
        let theirs = masters.iter().find(|m| m.domain == g.domain && m.server == me).map_or(0, |m| m.seq);
        let received = mine.iter().filter(|o| o.domain == g.domain && o.server != me).map(|o| o.seq).max().unwrap_or(0);
        let base = theirs.max(received);
        if g.seq > base {
            count += g.seq - base;
            let first = base + 1;
            ranges.push(if first == g.seq { format!("{}-{me}-{first}", g.domain) } else { format!("{}-{me}-{first}..{}", g.domain, g.seq) });
        }
    }
    (count, ranges.join(","))
}

impl std::fmt::Display for GtidPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.values().map(|g| format!("{}-{}-{}", g.domain, g.server, g.seq)).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_print_and_compare() {
        let p = GtidPos::parse("0-1-42,3-2-7").expect("parse");
        assert_eq!(p.seq(0), 42);
        assert_eq!(p.seq(3), 7);
        assert_eq!(p.seq(9), 0);
        assert_eq!(p.to_string(), "0-1-42,3-2-7");
        assert_eq!(GtidPos::parse("").expect("empty"), GtidPos::default());
        let master = GtidPos::parse("0-2-40,3-2-7").expect("parse");
        assert_eq!(p.ahead_of(&master), 2, "two transactions the master lacks");
        assert_eq!(p.ahead_ranges(&master), "0-1-41..42");
        assert_eq!(master.ahead_of(&p), 0);
        assert_eq!(master.ahead_ranges(&p), "");
        let two = GtidPos::parse("0-1-41,5-1-3").expect("parse");
        assert_eq!(two.ahead_ranges(&master), "0-1-41,5-1-1..3", "each domain counted on its own");
        assert_eq!(two.ahead_of(&master), 4);
        assert_eq!(p.merged(&two).to_string(), "0-1-42,3-2-7,5-1-3");
        assert_eq!(p.total(), 49);
        // Three errant writes on a replica (server 1) whose Master (2) wrote three of its own.
        let mine = parse_state("0-2-25,0-1-28").expect("state");
        let master = parse_state("0-1-20,0-2-28").expect("state");
        assert_eq!(errant(&mine, &master, 1), (3, "0-1-26..28".to_string()));
        assert_eq!(errant(&master, &mine, 2), (3, "0-2-26..28".to_string()), "and the three the diverged replica lacks");
        assert_eq!(errant(&mine, &mine, 1), (0, String::new()), "nothing errant against itself");
        // A returning old Master: it wrote up to 40, the new Master got up to 35.
        assert_eq!(errant(&parse_state("0-1-40").expect("s"), &parse_state("0-1-35,0-2-50").expect("s"), 1), (5, "0-1-36..40".to_string()));
        assert!(GtidPos::parse("0-1").expect_err("an error").contains("not a GTID"));
        assert!(GtidPos::parse("0-x-1").expect_err("an error").contains("server id"));
        assert!(GtidPos::parse("0-1-1,0-2-2").expect_err("an error").contains("twice"));
    }
}
