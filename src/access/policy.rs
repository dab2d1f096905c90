//! The decisions: which token a request presents, what that grants, and
//! whether the grant covers what the request asks for. Pure: the secrets
//! arrive as digests (see [`super::secret`] and [`super::load`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use super::pattern::DevicePattern;
use super::secret::{self, Digest};
use crate::fix::DeviceId;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The feed, the snapshot, the history, the fences, the map and tiles.
    Read,
    /// Post fixes (`POST /api/fixes`, `/osmand`).
    Write,
    /// `/metrics`.
    Metrics,
}

impl Scope {
    /// Every scope, in the order they are shown.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Metrics];

    /// The name in the config and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Metrics => "metrics",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Metrics => 4,
        }
    }
}

impl FromStr for Scope {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or(())
    }
}

/// A set of scopes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all.
    pub const NONE: Scopes = Scopes(0);
    /// Every scope.
    pub const ALL: Scopes = Scopes(7);

    /// This set and `scope`.
    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    /// This set without `scope`.
    pub fn without(self, scope: Scope) -> Self {
        Self(self.0 & !scope.bit())
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Both sets together.
    pub fn union(self, other: Scopes) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::NONE, Scopes::with)
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(Scope::ALL.iter().filter(|s| self.contains(**s)))
            .finish()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scope::ALL
            .iter()
            .filter(|s| self.contains(**s))
            .map(|s| s.as_str())
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// Which devices a grant may post fixes for.
#[derive(Debug, Clone)]
pub enum Writes {
    /// Any device (but the ones reserved to their own token).
    All,
    /// Devices whose id matches one of these.
    Patterns(Arc<[DevicePattern]>),
    /// This device alone: a deprecated `[http.tokens]` entry, whose token
    /// also names the device of a fix that names none.
    Own(DeviceId),
}

/// One token the policy knows, by its digest.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// For logs and metric labels.
    pub name: Arc<str>,
    /// The SHA-256 of the secret.
    pub digest: Digest,
    /// What it may do.
    pub scopes: Scopes,
    /// Groups it may read; `None`: all, and devices in no group.
    pub read_groups: Option<Arc<[String]>>,
    /// Devices it may post for.
    pub writes: Writes,
}

/// What a request showed to identify itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No token: the request is anonymous.
    Nothing,
    /// A token (from `Authorization: Bearer`, `?access_token=` or, for the
    /// intake, the deprecated `?token=`).
    Token(&'a str),
    /// Something that cannot be a token, and why (never the token itself).
    Malformed(&'static str),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Anonymous, and anonymous requests may not do this here.
    NoToken,
    /// A token that no configured token matches.
    BadToken,
    /// Something presented as a token that cannot be one.
    MalformedToken(&'static str),
    /// A known token that does not cover this (scope, group or device).
    OutOfScope,
}

impl Denial {
    /// The reason as counted (a fixed set: `no_token`, `bad_token`,
    /// `malformed_token`, `out_of_scope`).
    pub fn reason(self) -> &'static str {
        match self {
            Denial::NoToken => "no_token",
            Denial::BadToken => "bad_token",
            Denial::MalformedToken(_) => "malformed_token",
            Denial::OutOfScope => "out_of_scope",
        }
    }

    /// `401` (the client should authenticate, or did so wrongly) or `403`
    /// (it is known and may not do this).
    pub fn unauthorized(self) -> bool {
        !matches!(self, Denial::OutOfScope)
    }
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Anonymous,
    Token(Arc<str>),
}

/// What a request may do: the outcome of its token (or of its being
/// anonymous) and its address. Handlers find it as a request extension.
#[derive(Debug, Clone)]
pub struct Grant {
    who: Who,
    scopes: Scopes,
    read_groups: Option<Arc<[String]>>,
    writes: Writes,
    /// Devices only their own deprecated `[http.tokens]` token may post for.
    reserved: Arc<BTreeSet<DeviceId>>,
}

impl Grant {
    /// Everything, for every device and group: what a router served without
    /// the access layer would have to assume (tests of handlers alone).
    pub fn unrestricted() -> Self {
        Self {
            who: Who::Anonymous,
            scopes: Scopes::ALL,
            read_groups: None,
            writes: Writes::All,
            reserved: Arc::default(),
        }
    }

    /// The token's configured name; `None` for an anonymous request.
    pub fn token_name(&self) -> Option<&str> {
        match &self.who {
            Who::Anonymous => None,
            Who::Token(name) => Some(name),
        }
    }

    /// Whether no token was presented.
    pub fn is_anonymous(&self) -> bool {
        self.who == Who::Anonymous
    }

    /// Whether the grant carries `scope` at all.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }

    /// The groups it may read, when it may read only some.
    /// Whether the grant may read every group (and devices in none).
    pub fn read_groups(&self) -> Option<&[String]> {
        self.read_groups.as_deref()
    }

    /// Whether it may read every device, whatever its group.
    pub fn reads_all_groups(&self) -> bool {
        self.has(Scope::Read) && self.read_groups.is_none()
    }

    /// Whether a device of `group` may be shown to this client.
    ///
    /// The contract for the feed's filters (SSE, the `/api/devices`
    /// snapshot, `/api/history`): call it for every device before showing
    /// it, with the device's group (`None` for a device in no group). It is
    /// true for a reader without `read_groups` (every device, grouped or
    /// not), true for a reader with `read_groups` only when `group` is one
    /// of them, so **a device in no group is visible only to unrestricted
    /// readers**; and false without the `read` scope. Until a route calls
    /// it, [`crate::readers::feed::access`] refuses group-limited readers there
    /// (`403`), so nothing leaks in between.
    pub fn may_read_group(&self, group: Option<&str>) -> bool {
        if !self.has(Scope::Read) {
            return false;
        }
        match (&self.read_groups, group) {
            (None, _) => true,
            (Some(allowed), Some(group)) => allowed.iter().any(|g| g == group),
            (Some(_), None) => false,
        }
    }

    /// Whether the grant may post fixes for `device`: the `write` scope, the
    /// device among its `write_devices` (if it has any), and the device not
    /// reserved to its own deprecated `[http.tokens]` token.
    pub fn may_write_device(&self, device: &DeviceId) -> bool {
        if !self.has(Scope::Write) {
            return false;
        }
        if self.reserved.contains(device) {
            return matches!(&self.writes, Writes::Own(own) if own == device);
        }
        match &self.writes {
            Writes::All => true,
            Writes::Patterns(patterns) => patterns.iter().any(|p| p.matches(device.as_str())),
            Writes::Own(own) => own == device,
        }
    }

    /// The device a deprecated per-device token stands for: the device of a
    /// fix that names none.
    pub fn own_device(&self) -> Option<&DeviceId> {
        match &self.writes {
            Writes::Own(device) if self.has(Scope::Write) => Some(device),
            _ => None,
        }
    }

    /// Whether `device` may be posted for only with its own deprecated
    /// `[http.tokens]` token (a refusal then says `bad_token`, as it always
    /// did, rather than `out_of_scope`).
    pub fn is_reserved(&self, device: &DeviceId) -> bool {
        self.reserved.contains(device)
    }

    /// Whether the grant covers `scope`: the refusal says why not.
    pub fn require(&self, scope: Scope) -> Result<(), Denial> {
        match (self.has(scope), self.is_anonymous()) {
            (true, _) => Ok(()),
            (false, true) => Err(Denial::NoToken),
            (false, false) => Err(Denial::OutOfScope),
        }
    }

    /// The label of the grant in metrics: the token's name or `(anonymous)`.
    pub fn label(&self) -> &str {
        self.token_name().unwrap_or("(anonymous)")
    }
}

/// Who may do what: the tokens (as digests), what anonymous requests may
/// do, and the CORS origins. Built by [`super::load`] from the config; a
/// SIGHUP builds a new one.
#[derive(Debug, Clone)]
pub struct Policy {
    tokens: Vec<TokenGrant>,
    /// What anonymous requests may do from any address.
    anonymous: Scopes,
    /// What anonymous requests may do from a loopback address, besides.
    loopback: Scopes,
    reserved: Arc<BTreeSet<DeviceId>>,
    cors_origins: Vec<String>,
}

impl Default for Policy {
    /// No tokens; anonymous requests may do everything from loopback and
    /// nothing from elsewhere; no CORS origin.
    fn default() -> Self {
        Self::new(Vec::new(), Scopes::NONE, Scopes::ALL, Vec::new())
    }
}

impl Policy {
    /// A policy of `tokens`; anonymous requests get `anonymous` from any
    /// address and `loopback` besides from a loopback one.
    pub fn new(
        tokens: Vec<TokenGrant>,
        anonymous: Scopes,
        loopback: Scopes,
        cors_origins: Vec<String>,
    ) -> Self {
        let reserved: BTreeSet<DeviceId> = tokens
            .iter()
            .filter_map(|t| match &t.writes {
                Writes::Own(device) => Some(device.clone()),
                _ => None,
            })
            .collect();
        Self {
            tokens,
            anonymous,
            loopback,
            reserved: Arc::new(reserved),
            cors_origins,
        }
    }

    /// The grant of a request from `peer` (`None`: unknown, taken as not
    /// loopback) that presented `presented`.
    ///
    /// A token is hashed once and its digest compared with every known one
    /// in constant time, all of them, so neither the comparison nor which
    /// entry matched shows in the time taken.
    pub fn grant(&self, presented: Presented<'_>, peer: Option<IpAddr>) -> Result<Grant, Denial> {
        match presented {
            Presented::Nothing => Ok(self.anonymous(peer)),
            Presented::Malformed(why) => Err(Denial::MalformedToken(why)),
            Presented::Token(token) => {
                secret::well_formed(token).map_err(Denial::MalformedToken)?;
                let digest = Digest::of(token);
                let mut found = None;
                for entry in &self.tokens {
                    if entry.digest.same(&digest) {
                        found = Some(entry);
                    }
                }
                let entry = found.ok_or(Denial::BadToken)?;
                Ok(Grant {
                    who: Who::Token(entry.name.clone()),
                    scopes: entry.scopes,
                    read_groups: entry.read_groups.clone(),
                    writes: entry.writes.clone(),
                    reserved: self.reserved.clone(),
                })
            }
        }
    }

    /// What an anonymous request from `peer` may do.
    pub fn anonymous(&self, peer: Option<IpAddr>) -> Grant {
        let mut scopes = self.anonymous;
        if peer.is_some_and(is_loopback) {
            scopes = scopes.union(self.loopback);
        }
        Grant {
            who: Who::Anonymous,
            scopes,
            read_groups: None,
            writes: Writes::All,
            reserved: self.reserved.clone(),
        }
    }

    /// Whether a browser page from `origin` may call the API (CORS).
    pub fn cors_allows(&self, origin: &str) -> bool {
        self.cors_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Tokens known.
    pub fn tokens(&self) -> usize {
        self.tokens.len()
    }

    /// What anonymous requests may do from other addresses than loopback.
    pub fn anonymous_scopes(&self) -> Scopes {
        self.anonymous
    }
}

/// Whether `ip` is a loopback address (IPv4-mapped ones included, as a
/// listener on `[::]` sees IPv4 clients).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn id(text: &str) -> DeviceId {
        DeviceId::new(text).unwrap()
    }

    fn token(name: &str, secret: &str, scopes: &[Scope]) -> TokenGrant {
        TokenGrant {
            name: Arc::from(name),
            digest: Digest::of(secret),
            scopes: scopes.iter().copied().collect(),
            read_groups: None,
            writes: Writes::All,
        }
    }

    fn policy() -> Policy {
        let mut buses = token("buses", "buses-secret-0123", &[Scope::Read, Scope::Write]);
        buses.read_groups = Some(Arc::from(vec!["buses".to_owned()]));
        buses.writes = Writes::Patterns(Arc::from(vec![DevicePattern::parse("bus-*").unwrap()]));
        let own = TokenGrant {
            writes: Writes::Own(id("van-1")),
            ..token("http.tokens", "van-1-own-token", &[Scope::Write])
        };
        Policy::new(
            vec![
                token("screen", "screen-secret-012", &[Scope::Read]),
                token("prom", "prom-secret-01234", &[Scope::Metrics]),
                buses,
                own,
            ],
            Scopes::NONE,
            Scopes::ALL,
            vec!["https://screens.example".into()],
        )
    }

    #[test]
    fn anonymous_requests_get_everything_on_loopback_and_nothing_elsewhere_by_default() {
        let p = policy();
        for peer in [
            ip("127.0.0.1"),
            ip("127.3.2.1"),
            ip("::1"),
            ip("::ffff:127.0.0.1"),
        ] {
            let g = p.grant(Presented::Nothing, peer).unwrap();
            assert!(g.is_anonymous());
            assert!(Scope::ALL.iter().all(|s| g.has(*s)), "{peer:?}");
        }
        for peer in [ip("192.168.1.20"), ip("10.0.0.1"), ip("fe80::1"), None] {
            let g = p.grant(Presented::Nothing, peer).unwrap();
            assert_eq!(g.require(Scope::Read), Err(Denial::NoToken), "{peer:?}");
            assert_eq!(g.require(Scope::Write), Err(Denial::NoToken));
            assert_eq!(g.require(Scope::Metrics), Err(Denial::NoToken));
        }
    }

    #[test]
    fn an_explicit_opt_in_opens_scopes_to_every_address_and_loopback_can_be_closed() {
        let p = Policy::new(
            Vec::new(),
            Scopes::NONE.with(Scope::Read),
            Scopes::NONE,
            Vec::new(),
        );
        let lan = p.grant(Presented::Nothing, ip("192.168.1.20")).unwrap();
        assert!(lan.require(Scope::Read).is_ok());
        assert_eq!(lan.require(Scope::Write), Err(Denial::NoToken));
        let local = p.grant(Presented::Nothing, ip("127.0.0.1")).unwrap();
        assert!(local.require(Scope::Read).is_ok());
        assert_eq!(local.require(Scope::Metrics), Err(Denial::NoToken));
    }

    #[test]
    fn unknown_tokens_are_401_known_ones_out_of_scope_403() {
        let p = policy();
        let lan = ip("192.168.1.20");
        assert_eq!(
            p.grant(Presented::Token("not-a-known-token"), lan)
                .unwrap_err(),
            Denial::BadToken
        );
        // A wrong token from loopback is still wrong: no silent fallback
        // to anonymous access.
        assert_eq!(
            p.grant(Presented::Token("not-a-known-token"), ip("127.0.0.1"))
                .unwrap_err(),
            Denial::BadToken
        );
        let screen = p.grant(Presented::Token("screen-secret-012"), lan).unwrap();
        assert_eq!(screen.token_name(), Some("screen"));
        assert!(screen.require(Scope::Read).is_ok());
        assert_eq!(screen.require(Scope::Write), Err(Denial::OutOfScope));
        assert_eq!(screen.require(Scope::Metrics), Err(Denial::OutOfScope));
        assert!(!screen.may_write_device(&id("bus-1")));
        let prom = p.grant(Presented::Token("prom-secret-01234"), lan).unwrap();
        assert!(prom.require(Scope::Metrics).is_ok());
        assert_eq!(prom.require(Scope::Read), Err(Denial::OutOfScope));
        assert!(Denial::BadToken.unauthorized());
        assert!(Denial::NoToken.unauthorized());
        assert!(Denial::MalformedToken("empty").unauthorized());
        assert!(!Denial::OutOfScope.unauthorized());
    }

    #[test]
    fn malformed_tokens_are_refused_before_hashing_with_their_reason() {
        let p = policy();
        assert_eq!(
            p.grant(Presented::Token(""), None).unwrap_err(),
            Denial::MalformedToken("empty")
        );
        assert_eq!(
            p.grant(Presented::Token(&"x".repeat(600)), None)
                .unwrap_err(),
            Denial::MalformedToken("too long")
        );
        assert_eq!(
            p.grant(Presented::Malformed("not Bearer"), None)
                .unwrap_err(),
            Denial::MalformedToken("not Bearer")
        );
        assert_eq!(Denial::MalformedToken("x").reason(), "malformed_token");
    }

    #[test]
    fn device_patterns_limit_writes_and_groups_limit_reads() {
        let p = policy();
        let buses = p
            .grant(Presented::Token("buses-secret-0123"), None)
            .unwrap();
        assert!(buses.may_write_device(&id("bus-1")));
        assert!(buses.may_write_device(&id("bus-77")));
        assert!(!buses.may_write_device(&id("tram-1")));
        // Reserved to its own deprecated token.
        assert!(!buses.may_write_device(&id("van-1")));
        assert!(buses.may_read_group(Some("buses")));
        assert!(!buses.may_read_group(Some("trams")));
        assert!(
            !buses.may_read_group(None),
            "no group: unrestricted readers only"
        );
        assert!(!buses.reads_all_groups());
        let screen = p
            .grant(Presented::Token("screen-secret-012"), None)
            .unwrap();
        assert!(screen.may_read_group(Some("trams")));
        assert!(screen.may_read_group(None));
        assert!(screen.reads_all_groups());
        let prom = p
            .grant(Presented::Token("prom-secret-01234"), None)
            .unwrap();
        assert!(!prom.may_read_group(None));
    }

    #[test]
    fn a_deprecated_device_token_writes_its_device_alone_and_names_it() {
        let p = policy();
        let own = p.grant(Presented::Token("van-1-own-token"), None).unwrap();
        assert!(own.may_write_device(&id("van-1")));
        assert!(!own.may_write_device(&id("van-2")));
        assert_eq!(own.own_device(), Some(&id("van-1")));
        assert_eq!(own.token_name(), Some("http.tokens"));
        // Anonymous loopback writes reach every device but the reserved one.
        let local = p.grant(Presented::Nothing, ip("127.0.0.1")).unwrap();
        assert!(local.may_write_device(&id("car-1")));
        assert!(!local.may_write_device(&id("van-1")));
        assert!(local.is_reserved(&id("van-1")));
        assert_eq!(local.own_device(), None);
    }

    #[test]
    fn cors_origins_match_exactly_ignoring_ascii_case() {
        let p = policy();
        assert!(p.cors_allows("https://screens.example"));
        assert!(p.cors_allows("https://SCREENS.example"));
        assert!(!p.cors_allows("https://screens.example.evil"));
        assert!(!p.cors_allows("http://screens.example"));
        assert!(!p.cors_allows("null"));
    }

    #[test]
    fn scopes_read_and_show_by_name() {
        let s: Scopes = [Scope::Read, Scope::Metrics].into_iter().collect();
        assert_eq!(s.to_string(), "read, metrics");
        assert_eq!(format!("{s:?}"), "[Read, Metrics]");
        assert_eq!(Scopes::NONE.to_string(), "none");
        assert_eq!("write".parse::<Scope>(), Ok(Scope::Write));
        assert!("admin".parse::<Scope>().is_err());
        assert!(!s.without(Scope::Read).contains(Scope::Read));
    }
}
