//! Who may connect: the login decision, a plain function of the configured
//! users and what the CONNECT carried.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rumqttc::mqttbytes::v4::{ConnectReturnCode, Login};

use crate::ingest::intake::same_secret;

/// Longest client id or user name shown in logs: both are whatever a client
/// sent, up to 64 KiB each.
pub const SHOWN_CHARS: usize = 64;

/// Whose connection it is, for the per-login connection limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Without `[mqtt.users]` everyone is anonymous, whatever name they
    /// send: a name from outside never becomes a key of its own.
    Anonymous,
    /// A configured login.
    User(String),
}

/// A refused login: the CONNACK code the client gets and the reason counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The CONNACK return code.
    pub code: ConnectReturnCode,
    /// The `reason` label of `fixgate_ingest_rejected_total`.
    pub reason: &'static str,
}

/// Decides a login. Without `users` every client is let in as
/// [`Bucket::Anonymous`]; with them a client must name one and give its
/// password (compared in constant time).
pub fn decide(users: &BTreeMap<String, String>, login: Option<&Login>) -> Result<Bucket, Refused> {
    if users.is_empty() {
        return Ok(Bucket::Anonymous);
    }
    let Some(login) = login else {
        return Err(Refused {
            code: ConnectReturnCode::NotAuthorized,
            reason: "no_credentials",
        });
    };
    match users.get(&login.username) {
        None => Err(Refused {
            code: ConnectReturnCode::BadUserNamePassword,
            reason: "unknown_user",
        }),
        Some(expected) if same_secret(expected.as_bytes(), login.password.as_bytes()) => {
            Ok(Bucket::User(login.username.clone()))
        }
        Some(_) => Err(Refused {
            code: ConnectReturnCode::BadUserNamePassword,
            reason: "bad_password",
        }),
    }
}

/// The device label of a refused login: only configured users get one of
/// their own, so that invented names cannot grow the metrics.
pub fn label<'a>(users: &BTreeMap<String, String>, login: Option<&'a Login>) -> &'a str {
    match login {
        Some(l) if users.contains_key(&l.username) => l.username.as_str(),
        _ => "unknown",
    }
}

/// At most [`SHOWN_CHARS`] characters of an outside string, marked if cut.
pub fn shown(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> BTreeMap<String, String> {
        BTreeMap::from([("bus-1".to_owned(), "s3cret-pass".to_owned())])
    }

    #[test]
    fn logins_need_the_users_own_password() {
        let users = users();
        let login = |u: &str, p: &str| Login::new(u, p);
        assert_eq!(
            decide(&users, Some(&login("bus-1", "s3cret-pass"))),
            Ok(Bucket::User("bus-1".into()))
        );
        let refused = |code, reason| Err(Refused { code, reason });
        assert_eq!(
            decide(&users, Some(&login("bus-1", "s3cret-pasS"))),
            refused(ConnectReturnCode::BadUserNamePassword, "bad_password")
        );
        assert_eq!(
            decide(&users, Some(&login("bus-1", ""))),
            refused(ConnectReturnCode::BadUserNamePassword, "bad_password")
        );
        assert_eq!(
            decide(&users, Some(&login("bus-2", "s3cret-pass"))),
            refused(ConnectReturnCode::BadUserNamePassword, "unknown_user")
        );
        assert_eq!(
            decide(&users, None),
            refused(ConnectReturnCode::NotAuthorized, "no_credentials")
        );
    }

    #[test]
    fn without_users_everyone_is_one_anonymous_bucket() {
        let none = BTreeMap::new();
        assert_eq!(decide(&none, None), Ok(Bucket::Anonymous));
        assert_eq!(
            decide(&none, Some(&Login::new("anyone", "anything"))),
            Ok(Bucket::Anonymous)
        );
    }

    #[test]
    fn only_configured_users_get_a_label_and_shown_names_are_cut() {
        let users = users();
        let known = Login::new("bus-1", "x");
        let invented = Login::new("x".repeat(10_000), "x");
        assert_eq!(label(&users, Some(&known)), "bus-1");
        assert_eq!(label(&users, Some(&invented)), "unknown");
        assert_eq!(label(&users, None), "unknown");
        assert_eq!(shown("short"), "short");
        let cut = shown(&invented.username);
        assert_eq!(cut.chars().count(), SHOWN_CHARS + 1);
        assert!(cut.ends_with('…'));
        // Character boundaries, not bytes.
        assert_eq!(shown(&"é".repeat(100)).chars().count(), SHOWN_CHARS + 1);
    }
}
