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
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let f: Vec<&str> = part.split('-').collect();
            let [d, sv, sq] = f[..] else { return Err(format!("`{part}` is not a GTID (domain-server-seq)")) };
            let bad = |what: &str| format!("`{part}`: bad {what}");
            let g = Gtid {
                domain: d.parse().map_err(|_| bad("domain"))?,
                server: sv.parse().map_err(|_| bad("server id"))?,
                seq: sq.parse().map_err(|_| bad("sequence number"))?,
            };
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
        assert_eq!(master.ahead_of(&p), 0);
        assert!(GtidPos::parse("0-1").unwrap_err().contains("not a GTID"));
        assert!(GtidPos::parse("0-x-1").unwrap_err().contains("server id"));
        assert!(GtidPos::parse("0-1-1,0-2-2").unwrap_err().contains("twice"));
    }
}
