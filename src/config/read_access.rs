//! Reads `[access]` (with `[[access.token]]`), the TLS keys of `[feed]` and
//! the rate-limit keys of `[http]`. Secrets are not read here: a token's
//! file or credential is read when the daemon starts (and on SIGHUP), so
//! the config holds where a secret is, never the secret.

use std::collections::BTreeMap;

use toml::de::DeValue;

use super::{Reader, Section, Span, Value};
use crate::access::rate::{Net, Rate};
use crate::access::{DevicePattern, Digest, Scope, Scopes};
use crate::config::{Access, AccessToken, Http, ServerCert, TokenSecret};
use crate::fix::DeviceId;

/// The keys of `[access]`.
pub(super) const ACCESS_KEYS: &[&str] =
    &["token", "anonymous", "anonymous_loopback", "cors_origins"];
const TOKEN_KEYS: &[&str] = &[
    "name",
    "hash",
    "file",
    "credential",
    "scopes",
    "read_groups",
    "write_devices",
];
/// The keys that say where a token's secret is; exactly one is needed.
const SECRET_KEYS: &[&str] = &["hash", "file", "credential"];
/// Longest token name: it becomes a metric label value and a log field.
const NAME_CHARS: usize = 32;

impl Reader<'_> {
    pub(super) fn access(&mut self, s: &Section<'_, '_>) -> Access {
        let mut access = Access::default();
        if let Some(value) = s.get("token") {
            let mut names: BTreeMap<String, Span> = BTreeMap::new();
            for t in self.array_of_tables("access.token", value, TOKEN_KEYS) {
                if let Some(token) = self.access_token(&t, &mut names) {
                    access.tokens.push(token);
                }
            }
        }
        if let Some(scopes) = self.scopes(s, "anonymous") {
            access.anonymous = scopes;
            self.anonymous_span = s.get("anonymous").map(|v| v.span());
        }
        if let Some(value) = s.get("anonymous_loopback") {
            // true / false, or the scopes themselves.
            match value.get_ref().as_bool() {
                Some(true) => access.anonymous_loopback = Scopes::ALL,
                Some(false) => access.anonymous_loopback = Scopes::NONE,
                None => {
                    if let Some(scopes) = self.scopes(s, "anonymous_loopback") {
                        access.anonymous_loopback = scopes;
                    }
                }
            }
        }
        if let Some(origins) = self.strings(s, "cors_origins") {
            for (origin, span) in origins {
                match check_origin(&origin) {
                    Ok(()) => access.cors_origins.push(origin),
                    Err(why) => self.report(
                        &span,
                        format!("{} {origin:?}: {why}", s.key("cors_origins")),
                    ),
                }
            }
        }
        access
    }

    fn access_token(
        &mut self,
        s: &Section<'_, '_>,
        names: &mut BTreeMap<String, Span>,
    ) -> Option<AccessToken> {
        let name = if self.require(s, "name") {
            self.token_name(s, names)
        } else {
            None
        };
        let secret = self.token_secret(s);
        let scopes = if self.require(s, "scopes") {
            self.scopes(s, "scopes")
        } else {
            None
        };
        if let (Some(scopes), Some(value)) = (scopes, s.get("scopes")) {
            if scopes.is_empty() {
                self.report(
                    &value.span(),
                    format!("{} must name at least one scope", s.key("scopes")),
                );
            }
        }
        let read_groups = self.read_groups(s);
        let write_devices = self.write_devices(s);
        for (key, scope) in [
            ("read_groups", Scope::Read),
            ("write_devices", Scope::Write),
        ] {
            let limited = s.get(key).is_some();
            if let (true, Some(scopes), Some(value)) = (limited, scopes, s.get(key)) {
                if !scopes.contains(scope) {
                    self.report(
                        &value.span(),
                        format!(
                            "{} limits the {:?} scope, which this token does not have",
                            s.key(key),
                            scope.as_str()
                        ),
                    );
                }
            }
        }
        Some(AccessToken {
            name: name?,
            secret: secret?,
            scopes: scopes?,
            read_groups,
            write_devices,
        })
    }

    fn token_name(
        &mut self,
        s: &Section<'_, '_>,
        names: &mut BTreeMap<String, Span>,
    ) -> Option<String> {
        let (name, span) = self.string(s, "name")?;
        let valid = !name.is_empty()
            && name.len() <= NAME_CHARS
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            self.report(
                &span,
                format!(
                    "{} {name:?} must be 1 to {NAME_CHARS} of A-Z a-z 0-9 . _ - (it labels metrics and log lines)",
                    s.key("name")
                ),
            );
            return None;
        }
        if name.starts_with("http.") {
            self.report(
                &span,
                format!(
                    "{} {name:?}: names starting with \"http.\" are kept for the deprecated [http] tokens",
                    s.key("name")
                ),
            );
            return None;
        }
        if let Some(first) = names.get(name) {
            let (line, col) = self.locator.locate(first);
            self.report(
                &span,
                format!("duplicate token name {name:?}; first used at line {line}, column {col}"),
            );
            return None;
        }
        names.insert(name.to_owned(), span);
        Some(name.to_owned())
    }

    /// Exactly one of `hash`, `file`, `credential`.
    fn token_secret(&mut self, s: &Section<'_, '_>) -> Option<TokenSecret> {
        let given: Vec<&str> = SECRET_KEYS
            .iter()
            .copied()
            .filter(|k| s.get(k).is_some())
            .collect();
        match given.as_slice() {
            [] => {
                self.report(
                    &s.span,
                    format!(
                        "{} needs its secret: `hash = \"sha256:…\"` (from `fixgate token`), `file = \"/path\"` or `credential = \"name\"`",
                        s.header()
                    ),
                );
                return None;
            }
            [_] => {}
            [_, second, ..] => {
                let span = s.get(second).map_or(s.span.clone(), |v| v.span());
                self.report(
                    &span,
                    format!(
                        "{} takes one of `hash`, `file` and `credential`, not {}",
                        s.header(),
                        given
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                );
                return None;
            }
        }
        if let Some((text, span)) = self.string(s, "hash") {
            return match Digest::parse(text) {
                Ok(digest) => Some(TokenSecret::Hash(digest)),
                Err(err) => {
                    // The value is meant to be a digest, but someone may
                    // have pasted the token itself: never echo it.
                    self.report(&span, format!("{} {err}", s.key("hash")));
                    None
                }
            };
        }
        if let Some((path, span)) = self.path(s, "file") {
            if !path.is_absolute() {
                self.report(
                    &span,
                    format!(
                        "{} must be an absolute path (the service's working directory is /)",
                        s.key("file")
                    ),
                );
                return None;
            }
            return Some(TokenSecret::File(path));
        }
        let (name, span) = self.string(s, "credential")?;
        // systemd's credential names: a file name.
        if name.is_empty() || name.len() > 255 || name.contains('/') || name == "." || name == ".."
        {
            self.report(
                &span,
                format!(
                    "{} {name:?} must be a credential name (a file name, as in LoadCredential=NAME:PATH)",
                    s.key("credential")
                ),
            );
            return None;
        }
        Some(TokenSecret::Credential(name.to_owned()))
    }

    /// An array of scope names.
    fn scopes(&mut self, s: &Section<'_, '_>, key: &str) -> Option<Scopes> {
        let items = self.strings(s, key)?;
        let mut scopes = Scopes::NONE;
        for (text, span) in items {
            match text.parse::<Scope>() {
                Ok(scope) => scopes = scopes.with(scope),
                Err(()) => self.report(
                    &span,
                    format!(
                        "{} {text:?} is no scope; use \"read\", \"write\" or \"metrics\"",
                        s.key(key)
                    ),
                ),
            }
        }
        Some(scopes)
    }

    fn read_groups(&mut self, s: &Section<'_, '_>) -> Option<Vec<String>> {
        let items = self.strings(s, "read_groups")?;
        let mut groups = Vec::with_capacity(items.len());
        for (group, span) in items {
            // Group names follow the device-id rules: they appear in
            // `?group=` queries and in metric labels as they are.
            match DeviceId::new(&group) {
                Ok(_) => groups.push(group),
                Err(err) => self.report(
                    &span,
                    format!(
                        "{} {group:?} is not a valid group name: {err}",
                        s.key("read_groups")
                    ),
                ),
            }
        }
        Some(groups)
    }

    fn write_devices(&mut self, s: &Section<'_, '_>) -> Option<Vec<DevicePattern>> {
        let items = self.strings(s, "write_devices")?;
        let mut patterns = Vec::with_capacity(items.len());
        for (text, span) in items {
            match DevicePattern::parse(&text) {
                Ok(p) => patterns.push(p),
                Err(err) => {
                    self.report(&span, format!("{} {text:?}: {err}", s.key("write_devices")))
                }
            }
        }
        Some(patterns)
    }

    /// An array of strings, each with its span.
    pub(super) fn strings(
        &mut self,
        s: &Section<'_, '_>,
        key: &str,
    ) -> Option<Vec<(String, Span)>> {
        let value: &Value<'_> = s.get(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.report(
                &value.span(),
                format!(
                    "{} must be an array of strings, not {}",
                    s.key(key),
                    super::a(value.get_ref().type_str())
                ),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(text) => out.push((text.to_owned(), item.span())),
                None => self.report(
                    &item.span(),
                    format!("each of {} must be a string", s.key(key)),
                ),
            }
        }
        Some(out)
    }

    /// `tls_cert` and `tls_key` of `[feed]`: both or neither.
    pub(super) fn feed_tls(&mut self, s: &Section<'_, '_>) -> Option<ServerCert> {
        let cert = self.path(s, "tls_cert");
        let key = self.path(s, "tls_key");
        match (cert, key) {
            (Some((cert, _)), Some((key, _))) => Some(ServerCert { cert, key }),
            (None, None) => None,
            (Some((_, span)), None) | (None, Some((_, span))) => {
                self.report(
                    &span,
                    format!(
                        "{} and {} go together: set both for HTTPS, or neither",
                        s.key("tls_cert"),
                        s.key("tls_key")
                    ),
                );
                None
            }
        }
    }

    /// `rate_limit`, `rate_burst` and `rate_limit_exempt` of `[http]`.
    pub(super) fn http_rate(&mut self, s: &Section<'_, '_>, http: &mut Http) {
        if let Some(value) = s.get("rate_limit") {
            if value.get_ref().as_bool() == Some(false) {
                http.rate_limit = None;
            } else if let Some((text, span)) = self.string(s, "rate_limit") {
                match Rate::parse(text) {
                    Some(rate) => http.rate_limit = Some(rate),
                    None => self.report(
                        &span,
                        format!(
                            "{} must be a rate like \"50/s\", \"600/m\" or \"1000/h\", or false, not {text:?}",
                            s.key("rate_limit")
                        ),
                    ),
                }
            }
        }
        if let Some(n) = self.integer(s, "rate_burst", 1..=100_000) {
            http.rate_burst = n;
        }
        if let Some(items) = self.strings(s, "rate_limit_exempt") {
            let mut nets = Vec::with_capacity(items.len());
            for (text, span) in items {
                match text.parse::<Net>() {
                    Ok(net) => nets.push(net),
                    Err(why) => self.report(
                        &span,
                        format!(
                            "{} {text:?}: {why} (write an address or a range like \"10.0.0.0/8\")",
                            s.key("rate_limit_exempt")
                        ),
                    ),
                }
            }
            http.rate_limit_exempt = nets;
        }
    }

    /// `access.anonymous` may not open writes that the deprecated
    /// `http.token` closes.
    pub(super) fn check_anonymous_writes(&mut self, access: &Access, http: &Http) {
        if http.token.is_some() && access.anonymous.contains(Scope::Write) {
            let span = self.anonymous_span.clone().unwrap_or(0..0);
            self.report(
                &span,
                "`access.anonymous` opens writes to everyone, but `http.token` asks a token of every device: remove one of them",
            );
        }
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("an origin is scheme://host[:port], e.g. \"https://screens.example\"");
    };
    if scheme != "http" && scheme != "https" {
        return Err("the scheme must be http or https");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '*', ' ']) {
        return Err("an origin has a host and an optional port, no path, wildcard or slash");
    }
    Ok(())
}
