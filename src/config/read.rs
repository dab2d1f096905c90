//! Walks the parsed TOML tree by hand and builds a [`Config`].
//!
//! Serde derive stops at the first error of a struct; walking the spanned
//! tree instead lets every key be checked on its own, so that one bad value
//! never hides the next and every problem carries the position of the key or
//! value it is about. Invalid values are replaced by their defaults while the
//! walk goes on; the result is only returned when nothing was reported.

use std::fmt;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{Locator, Problem};
use super::{ClockTrust, Config, Demo, DemoVia, Feed, Gateway, Log, Pace, Pipeline, Replay, level};
use crate::fix::DeviceId;

/// A byte range in the source.
type Span = Range<usize>;
/// A value of the parsed document with its span.
type Value<'i> = Spanned<DeValue<'i>>;

#[path = "read_access.rs"]
mod access;
#[path = "read_chrony.rs"]
mod chrony;
#[path = "read_geofence.rs"]
mod fences;
#[path = "read_gpsd.rs"]
mod gpsd;
#[path = "read_ingest.rs"]
mod ingest;
#[path = "read_map.rs"]
mod map;
#[path = "read_serial.rs"]
mod serial;
#[path = "read_store.rs"]
mod store;
#[path = "read_uplink.rs"]
mod uplink;

const SECTIONS: &[&str] = &[
    "gateway", "store", "pipeline", "feed", "log", "serial", "replay", "demo", "mqtt", "http",
    "devices", "filter", "uplink", "geofence", "map", "group", "access", "gpsd",
];
const GATEWAY_KEYS: &[&str] = &["id", "clock"];
const PIPELINE_KEYS: &[&str] = &["queue"];
const FEED_KEYS: &[&str] = &[
    "listen",
    "keepalive",
    "retry",
    "max_clients",
    "max_connections",
    "header_timeout",
    "body_timeout",
    "stall_timeout",
    "max_snapshots",
    "tls_cert",
    "tls_key",
];
const LOG_KEYS: &[&str] = &["level"];
const REPLAY_KEYS: &[&str] = &["device", "path", "pace", "loop"];
const DEMO_KEYS: &[&str] = &["vehicles", "center", "rate_hz", "via"];

/// Replay rates are bounded so that one epoch's delay stays a sane `Duration`.
const REPLAY_RATE_HZ: RangeInclusive<f64> = 0.01..=1000.0;

/// Checks `source` and builds the configuration, or returns every problem.
/// Secrets named as systemd credentials are read from the service's
/// `$CREDENTIALS_DIRECTORY`.
pub(super) fn read(source: &str, file: &str) -> Result<Config, Vec<Problem>> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    read_in(source, file, credentials)
}

/// [`read`] with the credentials directory given (`None`: not run by a
/// unit with `LoadCredential=`).
pub(super) fn read_in(
    source: &str,
    file: &str,
    credentials: Option<PathBuf>,
) -> Result<Config, Vec<Problem>> {
    let mut reader = Reader {
        credentials,
        locator: Locator::new(source),
        source,
        file,
        problems: Vec::new(),
        devices: Vec::new(),
        serial_paths: Vec::new(),
        chrony_sockets: Vec::new(),
        demo_vehicles: None,
        demo_via_mqtt: None,
        anonymous_span: None,
    };
    let (document, syntax_errors) = DeTable::parse_recoverable(source);
    if !syntax_errors.is_empty() {
        // The tree recovered after a syntax error can miss or misplace keys
        // (a broken line, a table replaced by a later one), so checking it
        // would report problems that are not there: syntax errors come alone.
        for error in &syntax_errors {
            reader.syntax_error(error);
        }
        return Err(reader.problems);
    }
    let config = reader.document(document.get_ref());
    reader.check_unique_devices();
    reader.check_unique_serial_paths();
    reader.check_unique_chrony_sockets();
    reader.check_demo_broker(&config);
    reader.check_anonymous_writes(&config.access, &config.http);
    if reader.problems.is_empty() {
        Ok(config)
    } else {
        Err(reader.problems)
    }
}

/// The state of one walk: what was found wrong and what cross-checks need.
struct Reader<'s> {
    locator: Locator<'s>,
    source: &'s str,
    file: &'s str,
    problems: Vec<Problem>,
    /// Every source's device id and where it is written.
    devices: Vec<(DeviceId, Span)>,
    /// Every serial port path and where it is written.
    serial_paths: Vec<(PathBuf, Span)>,
    /// Every `chrony_socket` and where it is written.
    chrony_sockets: Vec<(PathBuf, Span)>,
    /// The demo fleet size when `[demo]` is on and its size valid.
    demo_vehicles: Option<u32>,
    /// Where `demo.via = "mqtt"` is written, for the broker cross-check.
    demo_via_mqtt: Option<Span>,
    /// `$CREDENTIALS_DIRECTORY`, where `*_credential` secrets are read.
    credentials: Option<PathBuf>,
    /// Where `access.anonymous` is written, for the `http.token` cross-check.
    anonymous_span: Option<Span>,
}

/// One table being read, and how messages name it.
struct Section<'a, 'i> {
    /// The section name: `feed`, `serial`.
    name: &'static str,
    /// True for an element of an array of tables such as `[[serial]]`.
    array: bool,
    table: &'a DeTable<'i>,
    /// Where the table starts: its header, or its `{` when inline.
    span: Span,
}

impl<'a, 'i> Section<'a, 'i> {
    fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.table.get(key)
    }

    /// The key as messages name it, e.g. `feed.listen`.
    fn key(&self, key: &str) -> String {
        format!("`{}.{key}`", self.name)
    }

    /// The section as written in a file, e.g. `[[serial]]`.
    fn header(&self) -> String {
        if self.array {
            format!("[[{}]]", self.name)
        } else {
            format!("[{}]", self.name)
        }
    }
}

impl<'s> Reader<'s> {
    fn report(&mut self, span: &Span, message: impl Into<String>) {
        let (line, col) = self.locator.locate(span);
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line: Some(line),
            col: Some(col),
            message: message.into(),
        });
    }

    fn syntax_error(&mut self, error: &toml::de::Error) {
        let mut message = format!("syntax error: {}", error.message());
        match error.span() {
            Some(span) => {
                // toml says "duplicate key" without the key; the span holds it.
                if let Some(text) = self.source.get(span.clone()).filter(|t| !t.is_empty()) {
                    if error.message() == "duplicate key" {
                        message = format!("syntax error: duplicate key `{text}`");
                    }
                }
                self.report(&span, message);
            }
            None => self
                .problems
                .push(Problem::whole_file(self.file.to_owned(), message)),
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per top-level section, in the order of the reference; each arm is two lines"
    )]
    fn document(&mut self, document: &DeTable<'_>) -> Config {
        let mut config = Config::default();
        for (key, value) in document.iter() {
            match key.get_ref().as_ref() {
                "gateway" => {
                    if let Some(s) = self.table("gateway", value, GATEWAY_KEYS) {
                        config.gateway = self.gateway(&s);
                    }
                }
                "store" => {
                    if let Some(s) = self.table("store", value, store::STORE_KEYS) {
                        config.store = self.store(&s);
                    }
                }
                "pipeline" => {
                    if let Some(s) = self.table("pipeline", value, PIPELINE_KEYS) {
                        config.pipeline = self.pipeline(&s);
                    }
                }
                "feed" => {
                    if let Some(s) = self.table("feed", value, FEED_KEYS) {
                        config.feed = self.feed(&s);
                    }
                }
                "log" => {
                    if let Some(s) = self.table("log", value, LOG_KEYS) {
                        config.log = self.log(&s);
                    }
                }
                "demo" => {
                    if let Some(s) = self.table("demo", value, DEMO_KEYS) {
                        config.demo = Some(self.demo(&s));
                    }
                }
                "serial" => {
                    for s in self.array_of_tables("serial", value, serial::SERIAL_KEYS) {
                        config.serial.extend(self.serial(&s));
                    }
                }
                "replay" => {
                    for s in self.array_of_tables("replay", value, REPLAY_KEYS) {
                        config.replay.extend(self.replay(&s));
                    }
                }
                "mqtt" => {
                    if let Some(s) = self.table("mqtt", value, &ingest::mqtt_keys()) {
                        config.mqtt = self.mqtt(&s);
                    }
                }
                "http" => {
                    if let Some(s) = self.table("http", value, ingest::HTTP_KEYS) {
                        config.http = self.http(&s);
                    }
                }
                "filter" => {
                    if let Some(s) = self.table("filter", value, ingest::FILTER_KEYS) {
                        config.filter = self.filter(&s);
                    }
                }
                "devices" => {
                    if let Some(s) = self.table("devices", value, ingest::DEVICES_KEYS) {
                        config.devices = self.devices_section(&s);
                    }
                }
                "uplink" => {
                    if let Some(s) = self.table("uplink", value, &uplink::uplink_keys()) {
                        config.uplink = self.uplink(&s);
                    }
                }
                "geofence" => {
                    if let Some(s) = self.table("geofence", value, fences::GEOFENCE_KEYS) {
                        config.geofence = self.geofence(&s);
                    }
                }
                "map" => {
                    if let Some(s) = self.table("map", value, map::MAP_KEYS) {
                        config.map = self.map(&s);
                    }
                }
                "group" => {
                    for s in self.array_of_tables("group", value, map::GROUP_KEYS) {
                        if let Some(rule) = self.group(&s) {
                            if config.groups.iter().any(|g| g.name == rule.name) {
                                self.report(
                                    &s.span,
                                    format!("{} {} is defined twice", s.key("name"), rule.name),
                                );
                            } else {
                                config.groups.push(rule);
                            }
                        }
                    }
                }
                "access" => {
                    if let Some(s) = self.table("access", value, access::ACCESS_KEYS) {
                        config.access = self.access(&s);
                    }
                }
                "gpsd" => {
                    if let Some(s) = self.table("gpsd", value, gpsd::GPSD_KEYS) {
                        config.gpsd = self.gpsd(&s);
                    }
                }
                other => self.report(
                    &key.span(),
                    format!(
                        "unknown section `{other}`; expected one of: {}",
                        SECTIONS.join(", ")
                    ),
                ),
            }
        }
        config
    }

    /// Opens `[name]`, reporting a value that is not a table and unknown keys.
    fn table<'a, 'i>(
        &mut self,
        name: &'static str,
        value: &'a Value<'i>,
        keys: &[&str],
    ) -> Option<Section<'a, 'i>> {
        let DeValue::Table(table) = value.get_ref() else {
            self.report(
                &value.span(),
                format!(
                    "`{name}` must be a table ([{name}]), not {}",
                    a(value.get_ref().type_str())
                ),
            );
            return None;
        };
        Some(self.section(name, false, table, value.span(), keys))
    }

    /// Opens every `[[name]]`, reporting anything that is not an array of tables.
    fn array_of_tables<'a, 'i>(
        &mut self,
        name: &'static str,
        value: &'a Value<'i>,
        keys: &[&str],
    ) -> Vec<Section<'a, 'i>> {
        let DeValue::Array(elements) = value.get_ref() else {
            self.report(
                &value.span(),
                format!(
                    "`{name}` must be an array of tables: write [[{name}]], not {}",
                    match value.get_ref() {
                        DeValue::Table(_) => format!("[{name}]"),
                        other => a(other.type_str()),
                    }
                ),
            );
            return Vec::new();
        };
        let mut sections = Vec::new();
        for element in elements.iter() {
            match element.get_ref() {
                DeValue::Table(table) => {
                    sections.push(self.section(name, true, table, element.span(), keys));
                }
                other => self.report(
                    &element.span(),
                    format!(
                        "each `{name}` entry must be a table ([[{name}]]), not {}",
                        a(other.type_str())
                    ),
                ),
            }
        }
        sections
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a section is read with its name, kind, table, span and key list, all needed for the file:line:key of its errors"
    )]
    fn section<'a, 'i>(
        &mut self,
        name: &'static str,
        array: bool,
        table: &'a DeTable<'i>,
        span: Span,
        keys: &[&str],
    ) -> Section<'a, 'i> {
        let section = Section {
            name,
            array,
            table,
            span,
        };
        for key in table.keys() {
            if !keys.contains(&key.get_ref().as_ref()) {
                self.report(
                    &key.span(),
                    format!(
                        "unknown key `{}` in {}; expected one of: {}",
                        key.get_ref(),
                        section.header(),
                        keys.join(", ")
                    ),
                );
            }
        }
        section
    }

    fn gateway(&mut self, s: &Section<'_, '_>) -> Gateway {
        let mut gateway = Gateway::default();
        if let Some((id, _)) = self.device_id(s, "id") {
            gateway.id = id;
        }
        if let Some((text, span)) = self.string(s, "clock") {
            match text {
                "auto" => gateway.clock = ClockTrust::Auto,
                "always" => gateway.clock = ClockTrust::Always,
                "never" => gateway.clock = ClockTrust::Never,
                _ => self.report(
                    &span,
                    format!(
                        "{} must be \"auto\", \"always\" or \"never\", not {text:?}",
                        s.key("clock")
                    ),
                ),
            }
        }
        gateway
    }

    fn pipeline(&mut self, s: &Section<'_, '_>) -> Pipeline {
        let mut pipeline = Pipeline::default();
        if let Some(queue) = self.integer(s, "queue", 1..=1_000_000) {
            pipeline.queue = queue;
        }
        pipeline
    }

    fn feed(&mut self, s: &Section<'_, '_>) -> Feed {
        let mut feed = Feed::default();
        if let Some((text, span)) = self.string(s, "listen") {
            match text.parse::<SocketAddr>() {
                Ok(addr) => feed.listen = addr,
                Err(_) => self.report(
                    &span,
                    format!(
                        "{} must be an IP address and port like \"0.0.0.0:8080\" or \"[::1]:8080\", not {text:?}",
                        s.key("listen")
                    ),
                ),
            }
        }
        let keepalive = Duration::from_secs(1)..=Duration::from_secs(300);
        if let Some((d, _)) = self.duration(s, "keepalive", keepalive) {
            feed.keepalive = d;
        }
        let retry = Duration::from_millis(100)..=Duration::from_secs(600);
        if let Some((d, _)) = self.duration(s, "retry", retry) {
            feed.retry = d;
        }
        if let Some(n) = self.integer(s, "max_clients", 1..=100_000) {
            feed.max_clients = n;
        }
        if let Some(n) = self.integer(s, "max_connections", 8..=1_000_000) {
            feed.max_connections = n;
        }
        let timeout = Duration::from_secs(1)..=Duration::from_secs(600);
        if let Some((d, _)) = self.duration(s, "header_timeout", timeout.clone()) {
            feed.header_timeout = d;
        }
        if let Some((d, _)) = self.duration(s, "body_timeout", timeout.clone()) {
            feed.body_timeout = d;
        }
        feed.tls = self.feed_tls(s);
        if let Some((d, _)) = self.duration(s, "stall_timeout", timeout) {
            feed.stall_timeout = d;
        }
        if let Some(n) = self.integer(s, "max_snapshots", 1..=10_000) {
            feed.max_snapshots = n;
        }
        feed
    }

    fn log(&mut self, s: &Section<'_, '_>) -> Log {
        let mut log = Log::default();
        if let Some((text, span)) = self.string(s, "level") {
            match level::check(text) {
                Ok(()) => log.level = text.to_owned(),
                Err(why) => self.report(&span, format!("{} {why}", s.key("level"))),
            }
        }
        log
    }

    fn replay(&mut self, s: &Section<'_, '_>) -> Option<Replay> {
        let device = self.required_device(s);
        let path = self.required_path(s);
        let mut pace = Pace::default();
        if let Some((text, span)) = self.string(s, "pace") {
            match parse_pace(text) {
                Some(p) => pace = p,
                None => self.report(
                    &span,
                    format!(
                        "{} must be \"recorded\", \"max\" or a rate from {} to {} like \"5hz\", not {text:?}",
                        s.key("pace"),
                        REPLAY_RATE_HZ.start(),
                        REPLAY_RATE_HZ.end()
                    ),
                ),
            }
        }
        let r#loop = self.boolean(s, "loop").unwrap_or(false);
        Some(Replay {
            device: device?,
            path: path?,
            pace,
            r#loop,
        })
    }

    fn demo(&mut self, s: &Section<'_, '_>) -> Demo {
        let mut demo = Demo::default();
        match self.integer(s, "vehicles", 1..=1000) {
            Some(n) => {
                demo.vehicles = n;
                self.demo_vehicles = Some(n);
            }
            None if s.get("vehicles").is_none() => self.demo_vehicles = Some(demo.vehicles),
            // Reported already; a guessed fleet size would only add noise.
            None => {}
        }
        if let Some(center) = self.center(s) {
            demo.center = center;
        }
        if let Some(rate) = self.float(s, "rate_hz", 0.1..=20.0) {
            demo.rate_hz = rate;
        }
        if let Some((text, span)) = self.string(s, "via") {
            match text {
                "nmea" => demo.via = DemoVia::Nmea,
                "mqtt" => {
                    demo.via = DemoVia::Mqtt;
                    self.demo_via_mqtt = Some(span);
                }
                _ => self.report(
                    &span,
                    format!(
                        "{} must be \"nmea\" or \"mqtt\", not {text:?}",
                        s.key("via")
                    ),
                ),
            }
        }
        demo
    }

    /// `center`: `[lat, lon]`, latitude limited to where Web Mercator maps work.
    fn center(&mut self, s: &Section<'_, '_>) -> Option<[f64; 2]> {
        let value = s.get("center")?;
        let shape = format!(
            "{} must be [lat, lon], two numbers in degrees",
            s.key("center")
        );
        let DeValue::Array(items) = value.get_ref() else {
            self.report(&value.span(), shape);
            return None;
        };
        let [lat, lon] = items.as_ref() else {
            self.report(
                &value.span(),
                format!("{shape}, not {} values", items.len()),
            );
            return None;
        };
        let lat = self.coordinate(s, "latitude", lat, 85.0);
        let lon = self.coordinate(s, "longitude", lon, 180.0);
        Some([lat?, lon?])
    }

    fn coordinate(
        &mut self,
        s: &Section<'_, '_>,
        what: &str,
        value: &Value<'_>,
        limit: f64,
    ) -> Option<f64> {
        let Some(x) = number(value.get_ref()) else {
            self.report(
                &value.span(),
                format!(
                    "{} {what} must be a number, not {}",
                    s.key("center"),
                    a(value.get_ref().type_str())
                ),
            );
            return None;
        };
        if !(-limit..=limit).contains(&x) {
            self.report(
                &value.span(),
                format!(
                    "{} {what} must be between -{limit} and {limit}, not {x}",
                    s.key("center")
                ),
            );
            return None;
        }
        Some(x)
    }

    /// The required `device` of a source, recorded for the uniqueness check.
    fn required_device(&mut self, s: &Section<'_, '_>) -> Option<DeviceId> {
        if !self.require(s, "device") {
            return None;
        }
        let (id, span) = self.device_id(s, "device")?;
        self.devices.push((id.clone(), span));
        Some(id)
    }

    fn required_path(&mut self, s: &Section<'_, '_>) -> Option<PathBuf> {
        if !self.require(s, "path") {
            return None;
        }
        let (path, span) = self.path(s, "path")?;
        if s.name == "serial" {
            self.serial_paths.push((path.clone(), span));
        }
        Some(path)
    }

    /// Reports a missing required key at the table's header; true when present.
    fn require(&mut self, s: &Section<'_, '_>, key: &str) -> bool {
        if s.get(key).is_some() {
            return true;
        }
        self.report(
            &s.span,
            format!("missing required key {} in {}", s.key(key), s.header()),
        );
        false
    }

    fn device_id(&mut self, s: &Section<'_, '_>, key: &str) -> Option<(DeviceId, Span)> {
        let (text, span) = self.string(s, key)?;
        match DeviceId::new(text) {
            Ok(id) => Some((id, span)),
            Err(err) => {
                self.report(
                    &span,
                    format!("{} {text:?} is not a valid id: {err}", s.key(key)),
                );
                None
            }
        }
    }

    fn path(&mut self, s: &Section<'_, '_>, key: &str) -> Option<(PathBuf, Span)> {
        let (text, span) = self.string(s, key)?;
        if text.is_empty() {
            self.report(&span, format!("{} must not be empty", s.key(key)));
            return None;
        }
        Some((PathBuf::from(text), span))
    }

    /// The value of `key` when present and of the kind `pick` accepts.
    fn typed<'a, 'i, T>(
        &mut self,
        s: &Section<'a, 'i>,
        key: &str,
        expected: &str,
        pick: impl FnOnce(&'a DeValue<'i>) -> Option<T>,
    ) -> Option<(T, Span)> {
        let value = s.get(key)?;
        match pick(value.get_ref()) {
            Some(t) => Some((t, value.span())),
            None => {
                self.report(
                    &value.span(),
                    format!(
                        "{} must be {expected}, not {}",
                        s.key(key),
                        a(value.get_ref().type_str())
                    ),
                );
                None
            }
        }
    }

    fn string<'a>(&mut self, s: &Section<'a, '_>, key: &str) -> Option<(&'a str, Span)> {
        self.typed(s, key, "a string", |v| v.as_str())
    }

    fn boolean(&mut self, s: &Section<'_, '_>, key: &str) -> Option<bool> {
        self.typed(s, key, "a boolean (true or false)", DeValue::as_bool)
            .map(|(b, _)| b)
    }

    fn integer<T: TryFrom<i64>>(
        &mut self,
        s: &Section<'_, '_>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let (int, span) = self.typed(s, key, "an integer", DeValue::as_integer)?;
        let n = i64::from_str_radix(int.as_str(), int.radix()).ok();
        match n.filter(|n| range.contains(n)).map(T::try_from) {
            Some(Ok(t)) => Some(t),
            _ => {
                self.report(&span, out_of_range(&s.key(key), &range, int));
                None
            }
        }
    }

    /// A float; integers are taken too, since `rate_hz = 2` means 2.0.
    fn float(&mut self, s: &Section<'_, '_>, key: &str, range: RangeInclusive<f64>) -> Option<f64> {
        let (x, span) = self.typed(s, key, "a number", number)?;
        if range.contains(&x) {
            Some(x)
        } else {
            self.report(&span, out_of_range(&s.key(key), &range, x));
            None
        }
    }

    /// A humantime duration string such as `"500ms"` or `"1m 30s"`.
    fn duration(
        &mut self,
        s: &Section<'_, '_>,
        key: &str,
        range: RangeInclusive<Duration>,
    ) -> Option<(Duration, Span)> {
        let (text, span) = self.typed(s, key, "a duration string like \"15s\"", DeValue::as_str)?;
        let d = match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(err) => {
                self.report(
                    &span,
                    format!(
                        "{} {text:?} is not a duration ({err}); write e.g. \"500ms\", \"15s\", \"2m\"",
                        s.key(key)
                    ),
                );
                return None;
            }
        };
        if range.contains(&d) {
            Some((d, span))
        } else {
            let shown = |d: &Duration| humantime::format_duration(*d);
            let range = shown(range.start())..=shown(range.end());
            self.report(&span, out_of_range(&s.key(key), &range, text));
            None
        }
    }

    /// Device ids must be unique across all sources, the demo fleet included:
    /// the store keeps one last-known state per id.
    fn check_unique_devices(&mut self) {
        // Sections are visited in name order; sort so "first" means first in the file.
        let mut devices = std::mem::take(&mut self.devices);
        devices.sort_by_key(|(_, span)| span.start);
        for (i, (id, span)) in devices.iter().enumerate() {
            if let Some((line, col)) = self.first_use(&devices, i) {
                self.report(
                    span,
                    format!("duplicate device id `{id}`; first used at line {line}, column {col}"),
                );
            } else if let Some(n) = self.demo_vehicles.filter(|&n| is_demo_name(id.as_str(), n)) {
                self.report(
                    span,
                    format!("device id `{id}` is taken by the demo fleet ([demo] vehicles = {n} names demo-1 to demo-{n})"),
                );
            }
        }
    }

    /// Serial ports open exclusively: a second source on one path would fail forever.
    /// `demo.via = "mqtt"` publishes to the embedded broker, anonymously.
    fn check_demo_broker(&mut self, config: &Config) {
        let Some(span) = self.demo_via_mqtt.clone() else {
            return;
        };
        match &config.mqtt.broker {
            super::Broker::Embedded(e) if e.logins.is_empty() => {}
            super::Broker::Embedded(_) => self.report(
                &span,
                "`demo.via = \"mqtt\"` publishes anonymously; it cannot be used with [mqtt.users] or [[mqtt.login]]",
            ),
            _ => self.report(
                &span,
                "`demo.via = \"mqtt\"` needs the embedded broker (mqtt.broker = \"embedded\")",
            ),
        }
    }

    /// Where the first of `items` equal to `items[i]` is written, when that
    /// is an earlier one: what uniqueness reports point the reader to.
    fn first_use<T: PartialEq>(&self, items: &[(T, Span)], i: usize) -> Option<(usize, usize)> {
        let (item, _) = &items[i];
        let (_, first) = items[..i].iter().find(|(other, _)| other == item)?;
        Some(self.locator.locate(first))
    }

    fn check_unique_serial_paths(&mut self) {
        let paths = std::mem::take(&mut self.serial_paths);
        self.report_reused(paths, "serial port");
    }

    /// Reports every path of `paths` that an earlier table already named,
    /// as the `what` it is.
    pub(super) fn report_reused(&mut self, mut paths: Vec<(PathBuf, Span)>, what: &str) {
        paths.sort_by_key(|(_, span)| span.start);
        for (i, (path, span)) in paths.iter().enumerate() {
            if let Some((line, col)) = self.first_use(&paths, i) {
                self.report(
                    span,
                    format!(
                        "{what} {} is already used at line {line}, column {col}",
                        path.display()
                    ),
                );
            }
        }
    }
}

/// `"recorded"`, `"max"` or a rate like `"5hz"` within [`REPLAY_RATE_HZ`].
fn parse_pace(text: &str) -> Option<Pace> {
    match text {
        "recorded" => Some(Pace::Recorded),
        "max" => Some(Pace::Max),
        _ => {
            let lower = text.to_ascii_lowercase();
            let rate: f64 = lower.strip_suffix("hz")?.trim_end().parse().ok()?;
            REPLAY_RATE_HZ.contains(&rate).then_some(Pace::Rate(rate))
        }
    }
}

/// Whether `id` is one of `demo-1` … `demo-{vehicles}`, as [`Demo::device_ids`] names them.
fn is_demo_name(id: &str, vehicles: u32) -> bool {
    id.strip_prefix("demo-")
        // Only the canonical spelling: `demo-01` is a different id.
        .filter(|n| !n.starts_with('0'))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| (1..=vehicles).contains(&n))
}

/// A TOML integer or float as `f64` (NaN and infinities included: range checks reject them).
fn number(value: &DeValue<'_>) -> Option<f64> {
    match value {
        DeValue::Float(f) => f.as_str().parse().ok(),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|i| i as f64),
        _ => None,
    }
}

fn out_of_range<T: fmt::Display>(
    key: &str,
    range: &RangeInclusive<T>,
    got: impl fmt::Display,
) -> String {
    format!(
        "{key} must be between {} and {}, not {got}",
        range.start(),
        range.end()
    )
}

/// "a string", "an integer": the type name with its article.
fn a(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}
