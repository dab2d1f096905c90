//! Device-id patterns of a token's `write_devices`: `*` stands for any run
//! of characters (none included), `?` for exactly one; every other
//! character is itself. Ids are ASCII (see [`crate::fix::DeviceId`]), so
//! matching works on bytes.

use std::fmt;

/// Longest pattern accepted: a device id is at most 64 characters, and a
/// pattern a little longer than any id can still say something useful.
const MAX_LEN: usize = 128;

/// A checked `write_devices` pattern such as `bus-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePattern(String);

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Nothing to match.
    #[error("a pattern must not be empty")]
    Empty,
    /// Over [`MAX_LEN`] characters.
    #[error("a pattern is at most {MAX_LEN} characters")]
    TooLong,
    /// A character no device id has and that is no wildcard.
    #[error("{0:?} cannot be in a device id: use A-Z a-z 0-9 . _ : - and the wildcards * and ?")]
    Character(char),
}

impl DevicePattern {
    /// Checks a pattern: the characters of device ids, `*` and `?`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > MAX_LEN {
            return Err(PatternError::TooLong);
        }
        if let Some(c) = text.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '*' | '?'))
        }) {
            return Err(PatternError::Character(c));
        }
        Ok(Self(text.to_owned()))
    }

    /// Whether `id` matches the whole pattern.
    pub fn matches(&self, id: &str) -> bool {
        crate::util::pattern::glob_matches(&self.0, id)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DevicePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, id: &str) -> bool {
        DevicePattern::parse(pattern).unwrap().matches(id)
    }

    #[test]
    fn stars_and_question_marks_match_as_in_a_shell() {
        assert!(m("bus-*", "bus-1"));
        assert!(m("bus-*", "bus-"));
        assert!(!m("bus-*", "tram-1"));
        assert!(!m("bus-*", "xbus-1"));
        assert!(m("*", "anything"));
        assert!(m("*-1", "bus-1"));
        assert!(!m("*-1", "bus-12"));
        assert!(m("bus-?", "bus-7"));
        assert!(!m("bus-?", "bus-17"));
        assert!(m("a*b*c", "a-x-b-y-c"));
        assert!(!m("a*b*c", "a-x-b-y-d"));
        assert!(m("van-3", "van-3"));
        assert!(!m("van-3", "van-30"));
        assert!(m("**x", "x"));
        // Case matters, as it does for device ids.
        assert!(!m("BUS-*", "bus-1"));
    }

    #[test]
    fn a_pattern_of_many_stars_stays_cheap() {
        let pattern = "*a".repeat(60);
        let id = "a".repeat(59) + "b";
        let started = std::time::Instant::now();
        assert!(!m(&pattern, &id));
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
    }

    #[test]
    fn patterns_name_only_device_id_characters() {
        assert_eq!(DevicePattern::parse(""), Err(PatternError::Empty));
        assert_eq!(
            DevicePattern::parse("bus/*"),
            Err(PatternError::Character('/'))
        );
        assert_eq!(
            DevicePattern::parse(&"x".repeat(129)),
            Err(PatternError::TooLong)
        );
        assert!(DevicePattern::parse("depot-3:bus-*").is_ok());
    }
}
