//! Session ids as they may reach the store and the WAF rule group.
//!
//! The id comes from a URL an attacker controls, and ends up inside a WAF byte-match search
//! string and a rule name, so only a conservative alphabet is accepted.

use std::fmt;

pub const MAX_SESSION_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionIdError {
    #[error("session id is empty")]
    Empty,
    #[error("session id `{shown}` is longer than {MAX_SESSION_ID_LEN} characters")]
    TooLong { shown: String },
    #[error("session id `{shown}` has characters outside [A-Za-z0-9_-]")]
    BadCharacter { shown: String },
}

impl SessionId {
    pub fn parse(text: &str) -> Result<Self, SessionIdError> {
        if text.is_empty() {
            return Err(SessionIdError::Empty);
        }
        // Shown escaped and shortened: the text may be hostile or huge.
        let shown = || text.chars().take(40).flat_map(char::escape_debug).collect::<String>();
        if text.len() > MAX_SESSION_ID_LEN {
            return Err(SessionIdError::TooLong { shown: shown() + "…" });
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(SessionIdError::BadCharacter { shown: shown() });
        }
        Ok(SessionId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SessionId {
    type Err = SessionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_token_alphabet_up_to_128() {
        assert!(SessionId::parse("a1B2_c-3").is_ok());
        assert!(SessionId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_what_could_widen_a_waf_match() {
        assert_eq!(SessionId::parse(""), Err(SessionIdError::Empty));
        assert!(matches!(SessionId::parse(&"x".repeat(129)), Err(SessionIdError::TooLong { .. })));
        for bad in ["abc.def", "abc/", "a b", "ab%2F", "é", "a\"b"] {
            assert!(matches!(SessionId::parse(bad), Err(SessionIdError::BadCharacter { .. })), "{bad} accepted");
        }
    }
}
