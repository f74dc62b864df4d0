//! The API's bearer token: read from a file only root can read, compared in constant time.

use std::path::Path;

#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Shorter tokens are guessable; a random 32-byte value in hex is what the README suggests.
const MIN_LEN: usize = 16;

impl Token {
    /// The file's first line; refused when others may read it, or when it is short.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!("{}: readable by group or others (mode {:o}); chmod 600 it", path.display(), meta.permissions().mode() & 0o777));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.len() < MIN_LEN {
            return Err(format!("{}: the token must be at least {MIN_LEN} characters (e.g. `openssl rand -hex 32`)", path.display()));
        }
        Ok(Token(token.as_bytes().to_vec()))
    }

    /// Whether an `Authorization` header carries this token (`Bearer …`), in constant time.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else { return false };
        bool::from(given.trim().as_bytes().ct_eq(&self.0))
    }

    #[cfg(test)]
    pub fn new(s: &str) -> Token {
        Token(s.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let t = Token::new("0123456789abcdef0123");
        assert!(t.accepts(Some("Bearer 0123456789abcdef0123")));
        for bad in [None, Some(""), Some("0123456789abcdef0123"), Some("Bearer 0123456789abcdef012"), Some("Bearer 0123456789abcdef01234"), Some("Basic x")] {
            assert!(!t.accepts(bad), "{bad:?}");
        }
    }
}
