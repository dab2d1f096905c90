//! Shell-style patterns over names (device ids, topic-free names): `*` any
//! run of characters, `?` one character, everything else itself. Used for
//! device groups and access scopes in the configuration.

/// A checked pattern such as `bus-*` or `van-??`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

/// Why a pattern is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// Empty, or longer than a device id can be.
    #[error("a pattern must have 1 to 64 characters")]
    Length,
    /// A character no device id has and that is not a wildcard.
    #[error("{0:?} cannot appear in a device id (use A-Z a-z 0-9 . _ : - and the wildcards * ?)")]
    Character(char),
}

impl Glob {
    /// Checks `text`: the characters of device ids plus `*` and `?`.
    pub fn new(text: &str) -> Result<Self, GlobError> {
        if text.is_empty() || text.chars().count() > 64 {
            return Err(GlobError::Length);
        }
        if let Some(c) = text.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '*' | '?'))
        }) {
            return Err(GlobError::Character(c));
        }
        Ok(Self(text.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        glob_matches(&self.0, name)
    }
}

/// Whether `name` matches the whole of `pattern` (`*` any run, `?` one
/// byte, the rest itself): the one matcher of every pattern type (groups,
/// token scopes, MQTT login scopes), which check their own characters.
/// Device ids are ASCII, so this works on bytes.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    matches(pattern.as_bytes(), name.as_bytes())
}

/// Iterative wildcard matching with one backtrack point: linear in practice,
/// never exponential (the last `*` seen is the only one retried).
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(b'?') => {
                p += 1;
                n += 1;
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and try again.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::new(p).unwrap()
    }

    #[test]
    fn stars_and_question_marks_match_whole_names() {
        assert!(glob("bus-*").matches("bus-1"));
        assert!(glob("bus-*").matches("bus-"));
        assert!(!glob("bus-*").matches("xbus-1"));
        assert!(glob("*").matches("anything"));
        assert!(glob("van-??").matches("van-12"));
        assert!(!glob("van-??").matches("van-1"));
        assert!(glob("*-depot-*").matches("bus-depot-3"));
        assert!(glob("a*b*c").matches("aXXbYYc"));
        assert!(!glob("a*b*c").matches("aXXbYY"));
        assert!(glob("exact").matches("exact"));
        assert!(!glob("exact").matches("exactly"));
    }

    #[test]
    fn patterns_use_the_characters_of_ids() {
        assert_eq!(Glob::new(""), Err(GlobError::Length));
        assert_eq!(Glob::new("bus/1"), Err(GlobError::Character('/')));
        assert!(Glob::new("bus:1.a_b-*?").is_ok());
    }

    #[test]
    fn a_hostile_pattern_does_not_take_exponential_time() {
        let p = glob("a*a*a*a*a*a*a*a*a*a*b");
        let name = "a".repeat(60);
        let started = std::time::Instant::now();
        assert!(!p.matches(&name));
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
    }
}
