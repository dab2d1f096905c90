//! Reads the intake sections: `[mqtt]` (with `[mqtt.users]`,
//! `[[mqtt.login]]` and `[[mqtt.topic]]`), `[http]` (with `[http.tokens]`),
//! `[devices]` and `[filter]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use toml::de::DeValue;

use super::{Reader, Section, Value, a};
use crate::config::{
    Broker, Devices, Embedded, External, Http, LoginForm, Mqtt, MqttBroker, MqttLogin, Topic,
};
use crate::fix::DeviceId;
use crate::pipeline::filter::FilterOptions;
use crate::sources::mqtt::scope::{self, Scope};
use crate::sources::payload::Format;
use crate::sources::topic::TopicPattern;
use crate::util::secret::{self, SecretHash};

/// Keys of `[mqtt]` whatever the broker.
const MQTT_COMMON: &[&str] = &["broker", "max_payload", "topic"];
const EMBEDDED_ONLY: &[&str] = &[
    "listen",
    "max_connections",
    "max_connections_per_user",
    "max_inflight",
    "connection_timeout",
    "users",
    "login",
    "anonymous_subscribe",
    "max_subscriptions",
    "max_subscriptions_per_connection",
];
const LOGIN_KEYS: &[&str] = &[
    "user",
    "password_hash",
    "password_file",
    "password_credential",
    "publish",
    "subscribe",
];
/// The ways a `[[mqtt.login]]` gives its secret; exactly one is used.
const SECRET_KEYS: &[&str] = &["password_hash", "password_file", "password_credential"];
const EXTERNAL_ONLY: &[&str] = &[
    "host",
    "port",
    "tls",
    "ca_file",
    "username",
    "password",
    "client_id",
    "share_group",
    "keep_alive",
];
/// Every key `[mqtt]` may hold.
pub(super) fn mqtt_keys() -> Vec<&'static str> {
    [MQTT_COMMON, EMBEDDED_ONLY, EXTERNAL_ONLY].concat()
}

const TOPIC_KEYS: &[&str] = &["pattern", "device", "format", "group"];
pub(super) const HTTP_KEYS: &[&str] = &[
    "enabled",
    "token",
    "tokens",
    "max_body",
    "rate_limit",
    "rate_burst",
    "rate_limit_exempt",
];
pub(super) const DEVICES_KEYS: &[&str] = &["offline_after", "max_devices"];

impl Reader<'_> {
    pub(super) fn mqtt(&mut self, s: &Section<'_, '_>) -> Mqtt {
        let mut mqtt = Mqtt::default();
        let kind = match self.string(s, "broker") {
            None => "embedded",
            Some((text @ ("embedded" | "external" | "off"), _)) => text,
            Some((text, span)) => {
                self.report(
                    &span,
                    format!(
                        "{} must be \"embedded\", \"external\" or \"off\", not {text:?}",
                        s.key("broker")
                    ),
                );
                "embedded"
            }
        };
        let foreign = match kind {
            "embedded" => EXTERNAL_ONLY,
            "external" => EMBEDDED_ONLY,
            _ => &[],
        };
        for key in foreign {
            if let Some(value) = s.get(key) {
                self.report(
                    &value.span(),
                    format!("{} does not apply with mqtt.broker = {kind:?}", s.key(key)),
                );
            }
        }
        mqtt.broker = match kind {
            "embedded" => Broker::Embedded(self.embedded(s)),
            "external" => Broker::External(self.external(s)),
            _ => Broker::Off,
        };
        if let Some(n) = self.integer(s, "max_payload", 64..=16 * 1024 * 1024) {
            mqtt.max_payload = n;
        }
        if let Some(value) = s.get("topic") {
            let topics: Vec<Topic> = self
                .array_of_tables("mqtt.topic", value, TOPIC_KEYS)
                .iter()
                .filter_map(|t| self.topic(t))
                .collect();
            mqtt.topics = topics;
        }
        mqtt
    }

    fn embedded(&mut self, s: &Section<'_, '_>) -> Embedded {
        let mut e = Embedded::default();
        if let Some(addr) = self.socket_addr(s, "listen", "0.0.0.0:1883") {
            e.listen = addr;
        }
        if let Some(n) = self.integer(s, "max_connections", 1..=100_000) {
            e.max_connections = n;
        }
        if let Some(n) = self.integer(s, "max_connections_per_user", 1..=100_000) {
            e.max_connections_per_user = n;
        }
        if let Some(n) = self.integer(s, "max_inflight", 1..=65_535) {
            e.max_inflight = n;
        }
        let timeout = Duration::from_millis(100)..=Duration::from_secs(60);
        if let Some((d, _)) = self.duration(s, "connection_timeout", timeout) {
            e.connection_timeout = d;
        }
        if let Some(n) = self.integer(s, "max_subscriptions", 1..=100_000) {
            e.max_subscriptions = n;
        }
        if let Some(n) = self.integer(s, "max_subscriptions_per_connection", 1..=1_000) {
            e.max_subscriptions_per_connection = n;
        }
        if let Some(users) = self.secret_map(s, "users") {
            for (user, (password, _)) in users {
                let login = MqttLogin {
                    secret: SecretHash::of(password.as_bytes()),
                    scope: Scope::legacy(),
                    form: LoginForm::Users,
                };
                e.logins.insert(user, login);
            }
        }
        if let Some(value) = s.get("login") {
            for t in self.array_of_tables("mqtt.login", value, LOGIN_KEYS) {
                let Some((user, login, span)) = self.login(&t) else {
                    continue;
                };
                match e.logins.get(&user).map(|l| l.form) {
                    None => {
                        e.logins.insert(user, login);
                    }
                    Some(form) => self.report(
                        &span,
                        format!(
                            "login {user:?} is configured twice (also in {})",
                            match form {
                                LoginForm::Users => "[mqtt.users]",
                                LoginForm::Login => "an earlier [[mqtt.login]]",
                            }
                        ),
                    ),
                }
            }
        }
        if let Some((filters, span)) = self.string_list(s, "anonymous_subscribe") {
            if !e.logins.is_empty() {
                self.report(
                    &span,
                    format!(
                        "{} applies only without logins: with [mqtt.users] or [[mqtt.login]] \
                         every client logs in; give the login a `subscribe` list",
                        s.key("anonymous_subscribe")
                    ),
                );
            }
            match Scope::anonymous(&filters) {
                Ok(scope) => e.anonymous = scope,
                Err(err) => self.report(&span, format!("{}: {err}", s.key("anonymous_subscribe"))),
            }
        }
        e
    }

    /// One `[[mqtt.login]]`: its name, the login, and where the name is
    /// written (for the duplicate check).
    fn login(&mut self, s: &Section<'_, '_>) -> Option<(String, MqttLogin, super::Span)> {
        if !self.require(s, "user") {
            return None;
        }
        let (user, user_span) = self.string(s, "user")?;
        let secret = self.login_secret(s);
        let what = format!("[[mqtt.login]] {user:?}");
        if let Err(err) = scope::check_name(user) {
            self.report(&user_span, format!("{what}: {err}"));
            return None;
        }
        let publish = match self.string_list(s, "publish") {
            None => scope::publish_scope(&[scope::USER.to_owned()], Some(user)).map_err(|err| {
                // The default `publish = ["{user}"]` fails only for a
                // name no device id can have.
                let hint = "without a `publish` list a login may publish only for the device \
                            named like it (publish = [\"{user}\"]), so give it one";
                (user_span.clone(), format!("{err}; {hint}"))
            }),
            Some((list, span)) => {
                scope::publish_scope(&list, Some(user)).map_err(|err| (span, err.to_string()))
            }
        };
        let subscribe = match self.string_list(s, "subscribe") {
            None => Ok(Vec::new()),
            Some((list, span)) => {
                scope::filters(&list, Some(user)).map_err(|err| (span, err.to_string()))
            }
        };
        let scope = match (publish, subscribe) {
            (Ok(publish), Ok(subscribe)) => Some(Scope { publish, subscribe }),
            (publish, subscribe) => {
                for (span, err) in [publish.err(), subscribe.err()].into_iter().flatten() {
                    self.report(&span, format!("{what}: {err}"));
                }
                None
            }
        };
        Some((
            user.to_owned(),
            MqttLogin {
                secret: secret?,
                scope: scope?,
                form: LoginForm::Login,
            },
            user_span,
        ))
    }

    /// The secret of a `[[mqtt.login]]`: exactly one of `password_hash`,
    /// `password_file`, `password_credential`. Reported problems name the
    /// key and the file, never what it holds.
    fn login_secret(&mut self, s: &Section<'_, '_>) -> Option<SecretHash> {
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
                        "[[mqtt.login]] needs its secret: one of {}",
                        SECRET_KEYS.join(", ")
                    ),
                );
                return None;
            }
            [_] => {}
            [_, second, ..] => {
                let span = s.get(second).map(|v| v.span()).unwrap_or(s.span.clone());
                self.report(
                    &span,
                    format!(
                        "[[mqtt.login]] takes one secret, not both {} and {}",
                        given[0], second
                    ),
                );
                return None;
            }
        }
        let (text, span) = self.string(s, given[0])?;
        let found = match given[0] {
            "password_hash" => SecretHash::parse(text),
            "password_file" if text.is_empty() => {
                self.report(
                    &span,
                    format!("{} must not be empty", s.key("password_file")),
                );
                return None;
            }
            "password_file" => secret::from_file(std::path::Path::new(text)),
            _ => secret::credential_path(self.credentials.as_deref(), text)
                .and_then(|path| secret::from_file(&path)),
        };
        match found {
            Ok(hash) => Some(hash),
            Err(err) => {
                self.report(&span, format!("{}: {err}", s.key(given[0])));
                None
            }
        }
    }

    /// An array of strings, each non-empty, with the array's span.
    fn string_list(
        &mut self,
        s: &Section<'_, '_>,
        key: &str,
    ) -> Option<(Vec<String>, super::Span)> {
        let (items, span) = self.typed(s, key, "an array of strings", DeValue::as_array)?;
        let mut list = Vec::with_capacity(items.len());
        for item in items {
            match item.get_ref().as_str() {
                Some(text) if !text.is_empty() => list.push(text.to_owned()),
                _ => self.report(
                    &item.span(),
                    format!("each of {} must be a non-empty string", s.key(key)),
                ),
            }
        }
        Some((list, span))
    }

    fn external(&mut self, s: &Section<'_, '_>) -> External {
        let mut e = External {
            broker: self.mqtt_broker(s),
            share_group: None,
        };
        if let Some((group, span)) = self.string(s, "share_group") {
            if group.is_empty() || group.contains(['/', '+', '#']) {
                self.report(
                    &span,
                    format!(
                        "{} must be a non-empty name without / + or #, not {group:?}",
                        s.key("share_group")
                    ),
                );
            } else {
                e.share_group = Some(group.to_owned());
            }
        }
        e
    }

    /// The keys of a broker the gateway connects to: `host`, `port`, `tls`,
    /// `ca_file`, `username`, `password`, `client_id`, `keep_alive`.
    pub(super) fn mqtt_broker(&mut self, s: &Section<'_, '_>) -> MqttBroker {
        let mut b = MqttBroker::default();
        if let Some((host, span)) = self.string(s, "host") {
            if host.is_empty() {
                self.report(&span, format!("{} must not be empty", s.key("host")));
            } else {
                b.host = host.to_owned();
            }
        }
        if let Some(tls) = self.boolean(s, "tls") {
            b.tls = tls;
            if tls {
                b.port = 8883;
            }
        }
        if let Some(port) = self.integer(s, "port", 1..=65_535) {
            b.port = port;
        }
        b.ca_file = self.path(s, "ca_file").map(|(p, _)| p);
        b.username = self.string(s, "username").map(|(t, _)| t.to_owned());
        b.password = self.string(s, "password").map(|(t, _)| t.to_owned());
        if let Some((id, span)) = self.string(s, "client_id") {
            if id.is_empty() || !id.is_ascii() {
                self.report(
                    &span,
                    format!("{} must be a non-empty ASCII string", s.key("client_id")),
                );
            } else {
                b.client_id = Some(id.to_owned());
            }
        }
        let keep_alive = Duration::from_secs(5)..=Duration::from_secs(3600);
        if let Some((d, _)) = self.duration(s, "keep_alive", keep_alive) {
            b.keep_alive = d;
        }
        b
    }

    fn topic(&mut self, s: &Section<'_, '_>) -> Option<Topic> {
        if !self.require(s, "pattern") {
            return None;
        }
        let (pattern, span) = self.string(s, "pattern")?;
        let template = self.string(s, "device");
        let mut format = Format::Auto;
        if let Some((text, fspan)) = self.string(s, "format") {
            match text.parse::<Format>() {
                Ok(f) => format = f,
                Err(_) => self.report(
                    &fspan,
                    format!(
                        "{} must be \"auto\", \"json\", \"owntracks\" or \"nmea\", not {text:?}",
                        s.key("format")
                    ),
                ),
            }
        }
        let group = self.string(s, "group");
        let parsed = TopicPattern::parse(pattern, template.as_ref().map(|(t, _)| *t));
        let parsed = match (parsed, group) {
            (Ok(p), Some((g, gspan))) => match p.with_group(g) {
                Ok(p) => Ok(p),
                Err(err) => {
                    self.report(&gspan, format!("{}: {err}", s.key("group")));
                    return None;
                }
            },
            (parsed, _) => parsed,
        };
        match parsed {
            Ok(pattern) => Some(Topic { pattern, format }),
            Err(err) => {
                let at = template.map_or(span, |(_, span)| span);
                self.report(&at, format!("{}: {err}", s.key("pattern")));
                None
            }
        }
    }

    pub(super) fn http(&mut self, s: &Section<'_, '_>) -> Http {
        let mut http = Http::default();
        if let Some(enabled) = self.boolean(s, "enabled") {
            http.enabled = enabled;
        }
        if let Some((token, span)) = self.string(s, "token") {
            if token.len() < 8 {
                self.report(
                    &span,
                    format!("{} must be at least 8 characters", s.key("token")),
                );
            } else {
                http.token = Some(token.to_owned());
            }
        }
        if let Some(tokens) = self.secret_map(s, "tokens") {
            for (device, (token, span)) in tokens {
                match DeviceId::new(&device) {
                    Ok(id) => {
                        http.tokens.insert(id, token);
                    }
                    Err(err) => self.report(
                        &span,
                        format!(
                            "{} key {device:?} is not a valid device id: {err}",
                            s.key("tokens")
                        ),
                    ),
                }
            }
        }
        if let Some(n) = self.integer(s, "max_body", 1024..=64 * 1024 * 1024) {
            http.max_body = n;
        }
        self.http_rate(s, &mut http);
        http
    }

    pub(super) fn devices_section(&mut self, s: &Section<'_, '_>) -> Devices {
        let mut devices = Devices::default();
        let silence = Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 3600);
        if let Some((d, _)) = self.duration(s, "offline_after", silence) {
            devices.offline_after = d;
        }
        if let Some(n) = self.integer(s, "max_devices", 1..=1_000_000) {
            devices.max_devices = n;
        }
        devices
    }

    /// An IP address and port, with an example of the expected form.
    fn socket_addr(&mut self, s: &Section<'_, '_>, key: &str, example: &str) -> Option<SocketAddr> {
        let (text, span) = self.string(s, key)?;
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.report(
                    &span,
                    format!(
                        "{} must be an IP address and port like {example:?}, not {text:?}",
                        s.key(key)
                    ),
                );
                None
            }
        }
    }

    /// A table of secrets (passwords, tokens) of at least 8 characters: the
    /// embedded broker and the HTTP intake answer guesses quickly.
    fn secret_map(
        &mut self,
        s: &Section<'_, '_>,
        key: &str,
    ) -> Option<BTreeMap<String, (String, super::Span)>> {
        let map = self.string_map(s, key)?;
        let mut ok = BTreeMap::new();
        for (name, (secret, span)) in map {
            if secret.chars().count() < 8 {
                self.report(
                    &span,
                    format!("`{}.{key}.{name}` must be at least 8 characters", s.name),
                );
            } else {
                ok.insert(name, (secret, span));
            }
        }
        Some(ok)
    }

    /// A table of string values (`[mqtt.users]`), each with its span.
    fn string_map(
        &mut self,
        s: &Section<'_, '_>,
        key: &str,
    ) -> Option<BTreeMap<String, (String, super::Span)>> {
        let value: &Value<'_> = s.get(key)?;
        let DeValue::Table(table) = value.get_ref() else {
            self.report(
                &value.span(),
                format!(
                    "{} must be a table of strings, not {}",
                    s.key(key),
                    a(value.get_ref().type_str())
                ),
            );
            return None;
        };
        let mut map = BTreeMap::new();
        for (k, v) in table.iter() {
            match v.get_ref().as_str() {
                Some(text) if !text.is_empty() => {
                    map.insert(k.get_ref().to_string(), (text.to_owned(), k.span()));
                }
                _ => self.report(
                    &v.span(),
                    format!(
                        "`{}.{key}.{}` must be a non-empty string",
                        s.name,
                        k.get_ref()
                    ),
                ),
            }
        }
        Some(map)
    }
}

pub(super) const FILTER_KEYS: &[&str] = &[
    "zero_island",
    "max_future",
    "max_age",
    "max_hdop",
    "max_accuracy",
    "duplicates",
    "max_speed",
    "min_period",
    "min_distance",
];

impl Reader<'_> {
    /// `[filter]`: every limit may be `false` to turn its filter off.
    pub(super) fn filter(&mut self, s: &Section<'_, '_>) -> FilterOptions {
        let mut f = FilterOptions::default();
        if let Some(on) = self.boolean(s, "zero_island") {
            f.drop_zero_island = on;
        }
        if let Some(on) = self.boolean(s, "duplicates") {
            f.drop_duplicates = on;
        }
        let week = Duration::from_secs(7 * 24 * 3600);
        if let Some(d) = self.optional_duration(s, "max_future", Duration::from_secs(1)..=week) {
            f.max_future = d;
        }
        let ages = Duration::from_secs(60)..=Duration::from_secs(10 * 365 * 24 * 3600);
        if let Some(d) = self.optional_duration(s, "max_age", ages) {
            f.max_age = d;
        }
        if let Some(d) = self.optional_duration(s, "min_period", Duration::from_millis(1)..=week) {
            f.min_period = d;
        }
        if let Some(x) = self.optional_float(s, "max_hdop", 0.5..=100.0) {
            f.max_hdop = x;
        }
        if let Some(x) = self.optional_float(s, "max_accuracy", 1.0..=100_000.0) {
            f.max_accuracy_m = x;
        }
        if let Some(x) = self.optional_float(s, "max_speed", 1.0..=1000.0) {
            f.max_speed_mps = x;
        }
        if let Some(x) = self.optional_float(s, "min_distance", 0.1..=10_000.0) {
            f.min_distance_m = x;
        }
        f
    }

    /// A duration, or `false` for none: `Some(None)` turns a filter off.
    fn optional_duration(
        &mut self,
        s: &Section<'_, '_>,
        key: &str,
        range: std::ops::RangeInclusive<Duration>,
    ) -> Option<Option<Duration>> {
        if s.get(key)?.get_ref().as_bool() == Some(false) {
            return Some(None);
        }
        self.duration(s, key, range).map(|(d, _)| Some(d))
    }

    /// A number, or `false` for none: `Some(None)` turns a filter off.
    fn optional_float(
        &mut self,
        s: &Section<'_, '_>,
        key: &str,
        range: std::ops::RangeInclusive<f64>,
    ) -> Option<Option<f64>> {
        if s.get(key)?.get_ref().as_bool() == Some(false) {
            return Some(None);
        }
        self.float(s, key, range).map(Some)
    }
}
