//! Who may read and write over HTTP: access tokens with scopes (`read`,
//! `write`, `metrics`), optionally limited to some device groups (reads)
//! and device-id patterns (writes); what anonymous requests may do (from
//! loopback everything by default, from anywhere else nothing unless
//! `access.anonymous` says so); the CORS origins; rate limits per client
//! address for the intake.
//!
//! The daemon never holds a token in plain text: the config gives a
//! SHA-256 digest, or a file or systemd credential that is read, hashed and
//! dropped at start and on SIGHUP. A presented token is hashed and compared
//! with every digest in constant time. Tokens are never logged, and no
//! message or response quotes one.
//!
//! The HTTP side (the middleware that classifies routes and inserts a
//! [`Grant`] into each request) is [`crate::readers::feed::access`].

pub mod pattern;
mod policy;
pub mod rate;
pub mod secret;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

pub use pattern::DevicePattern;
pub use policy::{
    Denial, Grant, Policy, Presented, Scope, Scopes, TokenGrant, Writes, is_loopback,
};
pub use secret::Digest;

use crate::config::{Access, Http, TokenSecret};

/// The name metrics and logs give the deprecated `http.token`.
pub const SHARED_HTTP_TOKEN: &str = "http.token";
/// The name metrics and logs give every deprecated `[http.tokens]` entry
/// (one name for all, so that a fleet of them adds no label values).
pub const DEVICE_HTTP_TOKENS: &str = "http.tokens";

/// Why the tokens could not be loaded: one line per token that failed.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct LoadError {
    /// `token "name": why`, one per problem.
    pub problems: Vec<String>,
}

/// Reads every token's secret and builds the policy of `access` and the
/// deprecated tokens of `http`. Fails, naming each token (never its
/// secret), when any secret cannot be read or two tokens are the same.
pub fn load(access: &Access, http: &Http) -> Result<Policy, LoadError> {
    build(access, http, Credentials::Required).map(|(policy, _)| policy)
}

/// Whether `credential =` tokens must be readable now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// The daemon: they must.
    Required,
    /// `fixgate check-config` run by hand: without `$CREDENTIALS_DIRECTORY`
    /// they are left out with a note.
    SkipWithoutDirectory,
}

/// [`load`], with notes on what was not checked (`check-config`).
pub fn build(
    access: &Access,
    http: &Http,
    credentials: Credentials,
) -> Result<(Policy, Vec<String>), LoadError> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut tokens = Vec::new();
    for t in &access.tokens {
        let digest = match &t.secret {
            TokenSecret::Hash(digest) => Ok(*digest),
            TokenSecret::File(path) => secret::from_file(path),
            TokenSecret::Credential(name) => {
                let absent = std::env::var_os(secret::CREDENTIALS_DIRECTORY).is_none();
                if absent && credentials == Credentials::SkipWithoutDirectory {
                    notes.push(format!(
                        "token {:?}: credential {name:?} not checked (${} is not set; the service gets it from LoadCredential=)",
                        t.name,
                        secret::CREDENTIALS_DIRECTORY
                    ));
                    continue;
                }
                secret::from_credential(name)
            }
        };
        match digest {
            Ok(digest) => tokens.push(TokenGrant {
                name: Arc::from(t.name.as_str()),
                digest,
                scopes: t.scopes,
                read_groups: t.read_groups.clone().map(Arc::from),
                writes: match &t.write_devices {
                    None => Writes::All,
                    Some(patterns) => Writes::Patterns(Arc::from(patterns.clone())),
                },
            }),
            Err(err) => problems.push(format!("token {:?}: {err}", t.name)),
        }
    }
    let mut anonymous = access.anonymous;
    let mut loopback = access.anonymous_loopback;
    if let Some(shared) = &http.token {
        tokens.push(TokenGrant {
            name: Arc::from(SHARED_HTTP_TOKEN),
            digest: Digest::of(shared),
            scopes: Scopes::NONE.with(Scope::Write),
            read_groups: None,
            writes: Writes::All,
        });
        // As before the access section: with a shared token every device
        // needs a token, from loopback too.
        anonymous = anonymous.without(Scope::Write);
        loopback = loopback.without(Scope::Write);
    }
    for (device, own) in &http.tokens {
        tokens.push(TokenGrant {
            name: Arc::from(DEVICE_HTTP_TOKENS),
            digest: Digest::of(own),
            scopes: Scopes::NONE.with(Scope::Write),
            read_groups: None,
            writes: Writes::Own(device.clone()),
        });
    }
    // Two entries with one secret would make a request's grant depend on
    // their order: refuse it, naming both.
    let mut seen: HashSet<Digest> = HashSet::new();
    for (i, t) in tokens.iter().enumerate() {
        if !seen.insert(t.digest) {
            let first = tokens[..i]
                .iter()
                .find(|o| o.digest == t.digest)
                .map_or("?", |o| &*o.name);
            problems.push(format!(
                "tokens {first:?} and {:?} have the same secret; each needs its own",
                t.name
            ));
        }
    }
    if !problems.is_empty() {
        return Err(LoadError { problems });
    }
    let policy = Policy::new(tokens, anonymous, loopback, access.cors_origins.clone());
    Ok((policy, notes))
}

/// The policy in force, shared by every request and replaced whole on
/// SIGHUP (a request keeps the one it started with).
#[derive(Debug, Clone)]
pub struct Shared(Arc<RwLock<Arc<Policy>>>);

impl Shared {
    /// Shares `policy`.
    pub fn new(policy: Policy) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(policy))))
    }

    /// The policy now.
    pub fn current(&self) -> Arc<Policy> {
        match self.0.read() {
            Ok(p) => p.clone(),
            // A writer that panicked left a whole policy behind (it only
            // ever swaps an Arc): keep using it.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `policy` in force for the requests that follow.
    pub fn replace(&self, policy: Policy) {
        let policy = Arc::new(policy);
        match self.0.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AccessToken;
    use crate::fix::DeviceId;
    use std::os::unix::fs::PermissionsExt;

    fn entry(name: &str, secret: TokenSecret, scopes: &[Scope]) -> AccessToken {
        AccessToken {
            name: name.into(),
            secret,
            scopes: scopes.iter().copied().collect(),
            read_groups: None,
            write_devices: None,
        }
    }

    #[test]
    fn hashes_files_and_deprecated_tokens_all_grant_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.token");
        std::fs::write(&file, "write-secret-from-a-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let access = Access {
            tokens: vec![
                entry(
                    "screen",
                    TokenSecret::Hash(Digest::of("screen-secret-012")),
                    &[Scope::Read],
                ),
                entry("writer", TokenSecret::File(file), &[Scope::Write]),
            ],
            ..Access::default()
        };
        let mut http = Http {
            token: Some("shared-secret".into()),
            ..Http::default()
        };
        http.tokens
            .insert(DeviceId::new("van-1").unwrap(), "van-1-own-token".into());
        let policy = load(&access, &http).unwrap();
        assert_eq!(policy.tokens(), 4);
        let g = |t| policy.grant(Presented::Token(t), None).unwrap();
        assert_eq!(g("screen-secret-012").token_name(), Some("screen"));
        assert_eq!(g("write-secret-from-a-file").token_name(), Some("writer"));
        assert_eq!(g("shared-secret").token_name(), Some(SHARED_HTTP_TOKEN));
        assert_eq!(g("van-1-own-token").token_name(), Some(DEVICE_HTTP_TOKENS));
        // The shared token took anonymous writes away, from loopback too.
        let local = policy.anonymous("127.0.0.1".parse().ok());
        assert!(!local.has(Scope::Write));
        assert!(local.has(Scope::Read));
    }

    #[test]
    fn unreadable_secrets_and_shared_secrets_are_named_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open.token");
        std::fs::write(&open, "an-open-secret-0123\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let access = Access {
            tokens: vec![
                entry("open", TokenSecret::File(open), &[Scope::Read]),
                entry(
                    "missing",
                    TokenSecret::File(dir.path().join("missing")),
                    &[Scope::Read],
                ),
                entry(
                    "a",
                    TokenSecret::Hash(Digest::of("twice-the-same-secret")),
                    &[Scope::Read],
                ),
                entry(
                    "b",
                    TokenSecret::Hash(Digest::of("twice-the-same-secret")),
                    &[Scope::Write],
                ),
            ],
            ..Access::default()
        };
        let err = load(&access, &Http::default()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(text.contains("token \"open\": "), "{text}");
        assert!(text.contains("readable by every user"), "{text}");
        assert!(text.contains("token \"missing\": "), "{text}");
        assert!(
            text.contains("tokens \"a\" and \"b\" have the same secret"),
            "{text}"
        );
        assert!(!text.contains("an-open-secret"), "{text}");
        assert!(!text.contains("twice-the-same"), "{text}");
    }

    #[test]
    fn credentials_come_from_the_credentials_directory_or_are_noted_as_unchecked() {
        let access = Access {
            tokens: vec![entry(
                "read",
                TokenSecret::Credential("read.token".into()),
                &[Scope::Read],
            )],
            ..Access::default()
        };
        // This test alone touches the variable in this process.
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: no other thread of the unit tests reads or writes
        // CREDENTIALS_DIRECTORY.
        unsafe { std::env::remove_var(secret::CREDENTIALS_DIRECTORY) };
        let err = load(&access, &Http::default()).unwrap_err().to_string();
        assert!(err.contains("CREDENTIALS_DIRECTORY is not set"), "{err}");
        let (policy, notes) =
            build(&access, &Http::default(), Credentials::SkipWithoutDirectory).unwrap();
        assert_eq!(policy.tokens(), 0);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("not checked"), "{notes:?}");
        std::fs::write(dir.path().join("read.token"), "from-systemd-credential\n").unwrap();
        // SAFETY: as above.
        unsafe { std::env::set_var(secret::CREDENTIALS_DIRECTORY, dir.path()) };
        let policy = load(&access, &Http::default()).unwrap();
        // SAFETY: as above.
        unsafe { std::env::remove_var(secret::CREDENTIALS_DIRECTORY) };
        let g = policy
            .grant(Presented::Token("from-systemd-credential"), None)
            .unwrap();
        assert_eq!(g.token_name(), Some("read"));
    }

    #[test]
    fn a_replaced_policy_is_seen_by_the_next_request() {
        let shared = Shared::new(Policy::default());
        let before = shared.current();
        shared.replace(Policy::new(
            Vec::new(),
            Scopes::ALL,
            Scopes::ALL,
            Vec::new(),
        ));
        assert!(before.anonymous_scopes().is_empty());
        assert_eq!(shared.current().anonymous_scopes(), Scopes::ALL);
    }
}
