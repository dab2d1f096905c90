//! Who may connect, and with what scope: the login decision, a plain
//! function of the configured logins and what the CONNECT carried.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use rumqttc::mqttbytes::v4::{ConnectReturnCode, Login};

use crate::config::Embedded;
use crate::sources::mqtt::scope::Scope;
use crate::util::secret::SecretHash;

/// Longest client id or user name shown in logs: both are whatever a client
/// sent, up to 64 KiB each.
pub const SHOWN_CHARS: usize = 64;

/// Whose connection it is, for the per-login connection limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Without logins everyone is anonymous, whatever name they send: a
    /// name from outside never becomes a key of its own.
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

/// One configured login: its password's digest and its scope.
#[derive(Debug)]
struct Account {
    secret: SecretHash,
    scope: Arc<Scope>,
}

/// The configured logins, or anonymous access when there are none.
#[derive(Debug)]
pub struct Accounts {
    logins: BTreeMap<String, Account>,
    anonymous: Arc<Scope>,
}

impl Accounts {
    /// The logins of `config` (`[mqtt.users]` and `[[mqtt.login]]`).
    pub fn new(config: &Embedded) -> Self {
        let logins = config
            .logins
            .iter()
            .map(|(user, login)| {
                let account = Account {
                    secret: login.secret.clone(),
                    scope: Arc::new(login.scope.clone()),
                };
                (user.clone(), account)
            })
            .collect();
        Self {
            logins,
            anonymous: Arc::new(config.anonymous.clone()),
        }
    }

    /// Decides a login. Without logins every client is let in as
    /// [`Bucket::Anonymous`]; with them a client must name one and give its
    /// password (their digests compared in constant time). The scope is
    /// the login's, or the anonymous one.
    pub fn decide(&self, login: Option<&Login>) -> Result<(Bucket, Arc<Scope>), Refused> {
        if self.logins.is_empty() {
            return Ok((Bucket::Anonymous, self.anonymous.clone()));
        }
        let Some(login) = login else {
            return Err(Refused {
                code: ConnectReturnCode::NotAuthorized,
                reason: "no_credentials",
            });
        };
        match self.logins.get(&login.username) {
            None => Err(Refused {
                code: ConnectReturnCode::BadUserNamePassword,
                reason: "unknown_user",
            }),
            Some(account) if account.secret.verify(login.password.as_bytes()) => {
                Ok((Bucket::User(login.username.clone()), account.scope.clone()))
            }
            Some(_) => Err(Refused {
                code: ConnectReturnCode::BadUserNamePassword,
                reason: "bad_password",
            }),
        }
    }

    /// The device label of a refused login: only configured logins get one
    /// of their own, so that invented names cannot grow the metrics.
    pub fn label<'a>(&self, login: Option<&'a Login>) -> &'a str {
        match login {
            Some(l) if self.logins.contains_key(&l.username) => l.username.as_str(),
            _ => "unknown",
        }
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
    use crate::config::{LoginForm, MqttLogin};
    use crate::sources::mqtt::scope::Publish;

    fn accounts() -> Accounts {
        let mut config = Embedded::default();
        config.logins.insert(
            "bus-1".to_owned(),
            MqttLogin {
                secret: SecretHash::of(b"s3cret-pass"),
                scope: Scope::for_login("bus-1", None, &[]).unwrap(),
                form: LoginForm::Login,
            },
        );
        config.logins.insert(
            "old".to_owned(),
            MqttLogin {
                secret: SecretHash::of(b"old-password"),
                scope: Scope::legacy(),
                form: LoginForm::Users,
            },
        );
        Accounts::new(&config)
    }

    #[test]
    fn logins_need_the_users_own_password_and_carry_its_scope() {
        let accounts = accounts();
        let login = |u: &str, p: &str| Login::new(u, p);
        let (bucket, scope) = accounts
            .decide(Some(&login("bus-1", "s3cret-pass")))
            .unwrap();
        assert_eq!(bucket, Bucket::User("bus-1".into()));
        assert!(matches!(&scope.publish, Publish::Devices(g) if g.len() == 1));
        let (_, scope) = accounts
            .decide(Some(&login("old", "old-password")))
            .unwrap();
        assert_eq!(scope.publish, Publish::Any);
        let refused = |code, reason| Some(Refused { code, reason });
        let decided = |l: Option<&Login>| accounts.decide(l).err();
        assert_eq!(
            decided(Some(&login("bus-1", "s3cret-pasS"))),
            refused(ConnectReturnCode::BadUserNamePassword, "bad_password")
        );
        assert_eq!(
            decided(Some(&login("bus-1", ""))),
            refused(ConnectReturnCode::BadUserNamePassword, "bad_password")
        );
        // Another login's password is no good either.
        assert_eq!(
            decided(Some(&login("bus-1", "old-password"))),
            refused(ConnectReturnCode::BadUserNamePassword, "bad_password")
        );
        assert_eq!(
            decided(Some(&login("bus-2", "s3cret-pass"))),
            refused(ConnectReturnCode::BadUserNamePassword, "unknown_user")
        );
        assert_eq!(
            decided(None),
            refused(ConnectReturnCode::NotAuthorized, "no_credentials")
        );
    }

    #[test]
    fn without_logins_everyone_is_one_anonymous_bucket() {
        let config = Embedded {
            anonymous: Scope::anonymous(&["screens/#".to_owned()]).unwrap(),
            ..Embedded::default()
        };
        let none = Accounts::new(&config);
        let (bucket, scope) = none.decide(None).unwrap();
        assert_eq!(bucket, Bucket::Anonymous);
        assert_eq!(scope.publish, Publish::Any);
        assert_eq!(scope.subscribe, vec!["screens/#".to_owned()]);
        let (bucket, _) = none
            .decide(Some(&Login::new("anyone", "anything")))
            .unwrap();
        assert_eq!(bucket, Bucket::Anonymous);
    }

    #[test]
    fn only_configured_users_get_a_label_and_shown_names_are_cut() {
        let accounts = accounts();
        let known = Login::new("bus-1", "x");
        let invented = Login::new("x".repeat(10_000), "x");
        assert_eq!(accounts.label(Some(&known)), "bus-1");
        assert_eq!(accounts.label(Some(&invented)), "unknown");
        assert_eq!(accounts.label(None), "unknown");
        assert_eq!(shown("short"), "short");
        let cut = shown(&invented.username);
        assert_eq!(cut.chars().count(), SHOWN_CHARS + 1);
        assert!(cut.ends_with('…'));
        // Character boundaries, not bytes.
        assert_eq!(shown(&"é".repeat(100)).chars().count(), SHOWN_CHARS + 1);
    }
}
