//! The exclusion patterns, matched the way rsync matches `--exclude` (the common subset: `*`,
//! `**`, `?`, `[...]`, a leading `/` anchoring at the synced directory, a trailing `/` meaning
//! directories only). Needed on our side because a path that vanished, sent as a deletion by
//! `--delete-missing-args`, is not filtered by rsync's sender, and the receiving daemon then
//! refuses the whole transfer for naming an excluded file.

use std::path::Path;

/// Whether `rel` (relative to the synced directory) or one of its parent directories is
/// excluded by one of `patterns`. `is_dir`: whether `rel` itself is a directory.
pub fn excluded(rel: &Path, is_dir: bool, patterns: &[String]) -> bool {
    let Some(rel) = rel.to_str() else { return false };
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    (1..=parts.len()).any(|n| {
        let dir = n < parts.len() || is_dir;
        patterns.iter().any(|p| matches(p, &parts[..n], dir))
    })
}

/// Whether one pattern matches the path made of `parts` (a directory when `dir`).
fn matches(pattern: &str, parts: &[&str], dir: bool) -> bool {
    let (pattern, dir_only) = match pattern.strip_suffix('/') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if pattern.is_empty() || (dir_only && !dir) {
        return false;
    }
    if let Some(anchored) = pattern.strip_prefix('/') {
        return glob(anchored.as_bytes(), parts.join("/").as_bytes());
    }
    if pattern.contains("**") {
        // `**` may span directories: try every tail of the path.
        return (0..parts.len()).any(|i| glob(pattern.as_bytes(), parts[i..].join("/").as_bytes()));
    }
    // Without `**`, a pattern of k components matches the last k components.
    let k = pattern.split('/').count();
    k <= parts.len() && glob(pattern.as_bytes(), parts[parts.len() - k..].join("/").as_bytes())
}

/// Shell-style match of a whole string; `*` stops at `/`, `**` does not.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => (0..=s.len()).any(|i| glob(&p[2..], &s[i..])),
        Some(b'*') => (0..=s.len()).take_while(|i| *i == 0 || s[i - 1] != b'/').any(|i| glob(&p[1..], &s[i..])),
        Some(b'?') => s.first().is_some_and(|c| *c != b'/') && glob(&p[1..], &s[1..]),
        Some(b'[') => match (s.first(), class(&p[1..])) {
            (Some(c), Some((set, negate, rest))) if *c != b'/' => (in_class(set, *c) != negate) && glob(rest, &s[1..]),
            (Some(c), None) => *c == b'[' && glob(&p[1..], &s[1..]),
            _ => false,
        },
        Some(b'\\') if p.len() > 1 => s.first() == Some(&p[1]) && glob(&p[2..], &s[1..]),
        Some(c) => s.first() == Some(c) && glob(&p[1..], &s[1..]),
    }
}

/// `[...]` after its `[`: the set, whether negated, and the pattern after `]`.
fn class(p: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let (negate, body) = match p.first() {
        Some(b'!' | b'^') => (true, &p[1..]),
        _ => (false, p),
    };
    // A `]` first in the set is literal.
    let end = body.iter().skip(1).position(|c| *c == b']')? + 1;
    Some((&body[..end], negate, &body[end + 1..]))
}

fn in_class(set: &[u8], c: u8) -> bool {
    let mut i = 0;
    while i < set.len() {
        if i + 2 < set.len() && set[i + 1] == b'-' {
            if (set[i]..=set[i + 2]).contains(&c) {
                return true;
            }
            i += 3;
        } else {
            if set[i] == c {
                return true;
            }
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(rel: &str, dir: bool, pats: &[&str]) -> bool {
        excluded(Path::new(rel), dir, &pats.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn names_match_in_any_directory_and_exclude_what_they_hold() {
        assert!(ex("a.tmp", false, &["*.tmp"]));
        assert!(ex("d/e/a.tmp", false, &["*.tmp"]));
        assert!(!ex("d/a.tmpx", false, &["*.tmp"]));
        assert!(ex("cache/x/y", false, &["cache"]), "inside an excluded directory");
        assert!(ex("d/f1.log", false, &["f?.log"]) && !ex("d/f12.log", false, &["f?.log"]));
        assert!(ex("d/f1.log", false, &["f[0-9].log"]) && !ex("d/fa.log", false, &["f[0-9].log"]) && ex("d/fa.log", false, &["f[!0-9].log"]));
    }

    #[test]
    fn anchors_slashes_and_directory_only_patterns() {
        assert!(ex("spool/x", false, &["/spool"]) && !ex("d/spool", false, &["/spool"]));
        assert!(ex("a/b/c", false, &["b/c"]) && !ex("a/bc", false, &["b/c"]));
        assert!(ex("a/x", false, &["*/x"]) && ex("a/b/x", false, &["*/x"]));
        assert!(!glob(b"a/*", b"a/b/x") && glob(b"a/**", b"a/b/x"), "`*` stays within a name");
        assert!(ex("a/b/c/x", false, &["a/**/x"]) && ex("q/a/b/x", false, &["a/**/x"]));
        assert!(ex("run", true, &["run/"]) && !ex("run", false, &["run/"]) && ex("run/pid", false, &["run/"]));
    }
}
