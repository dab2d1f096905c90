//! `fixgate simulate`: a fleet of simulated trackers publishing realistic
//! tracks to an MQTT broker or an HTTP endpoint, for demos, load tests and
//! latency benchmarks.
//!
//! One ticker task steps the whole [`Fleet`] once per period and hands each
//! device's fix to the transport in its own slot of the period, so a large
//! fleet publishes evenly instead of in one burst. Live fixes carry the wall
//! clock at the moment they are handed over, so a consumer can measure the
//! latency from the fix time to its arrival.

mod http;
mod mqtt;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Fleet;
use super::payload::{self, BadKind, Message, Wire};
use super::schedule::{self, Backlog, Outage};
use crate::fix::{DeviceId, Fix};

/// The depot the demo fleet drives around (Utrecht), the default centre.
pub const DEFAULT_CENTER: (f64, f64) = (52.0907, 5.1214);

/// How long shutdown waits for outstanding acknowledgements.
pub const ACK_GRACE: Duration = Duration::from_secs(5);

/// Slowest rate: one fix in about 17 minutes (and a period a timer can hold).
pub const MIN_RATE_HZ: f64 = 0.001;

/// Fastest rate: beyond what GNSS receivers and trackers report.
pub const MAX_RATE_HZ: f64 = 100.0;

/// How often `--stats` prints progress.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// Fixes a device keeps while offline before it drops the oldest.
const BACKLOG_CAPACITY: usize = 10_000;

/// Metres per degree of latitude, as the fleet uses.
const METRES_PER_DEGREE: f64 = 111_320.0;

/// User equivalent range error: accuracy in metres is about HDOP times this.
const UERE_M: f64 = 5.0;

/// Everything `fixgate simulate` needs; [`SimulateOptions::default`] is the CLI's defaults.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Where the fixes go.
    pub target: Target,
    /// Number of simulated devices.
    pub devices: usize,
    /// Fixes per second per device.
    pub rate_hz: f64,
    /// How long to run; `None` runs until cancelled (Ctrl-C, SIGTERM).
    pub duration: Option<Duration>,
    /// The depot (latitude, longitude) the routes start from.
    pub center: (f64, f64),
    /// Seed of the fleet's routes and noise; `None` picks one (and logs it).
    pub seed: Option<u64>,
    /// Device ids are this prefix followed by `1..=devices`.
    pub prefix: String,
    /// Extra position noise in metres (one standard deviation per axis), on
    /// top of the fleet's own half a metre.
    pub noise_m: f64,
    /// Periodic outages during which devices buffer fixes, or none.
    pub outage: Option<Outage>,
    /// Every `n`th message across the fleet is a bad payload, or none.
    pub bad_every: Option<u64>,
    /// Print progress to stderr every 10 s.
    pub stats: bool,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        Self {
            target: Target::Mqtt(MqttTarget::default()),
            devices: 10,
            rate_hz: 1.0,
            duration: None,
            center: DEFAULT_CENTER,
            seed: None,
            prefix: "sim-".into(),
            noise_m: 0.0,
            outage: None,
            bad_every: None,
            stats: false,
        }
    }
}

/// The transport and its settings.
#[derive(Debug, Clone)]
pub enum Target {
    /// Publish to an MQTT broker.
    Mqtt(MqttTarget),
    /// POST to an HTTP endpoint.
    Http(HttpTarget),
}

/// MQTT settings.
#[derive(Debug, Clone)]
pub struct MqttTarget {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Payload format.
    pub format: MqttFormat,
    /// Topic template; `{device}` is replaced by the device id.
    pub topic: String,
    /// 0 or 1.
    pub qos: u8,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password (sent only with a user name).
    pub password: Option<String>,
    /// Client ids are this prefix followed by the device id (or `shared`).
    pub client_id_prefix: String,
    /// One connection per device, or one for all.
    pub connections: Connections,
    /// PEM file of the CA that signed the broker's certificate; enables TLS.
    pub tls_ca: Option<PathBuf>,
}

impl Default for MqttTarget {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            format: MqttFormat::Json,
            topic: MqttFormat::Json.default_topic().into(),
            qos: 1,
            username: None,
            password: None,
            client_id_prefix: "fixgate-".into(),
            connections: Connections::PerDevice,
            tls_ca: None,
        }
    }
}

/// MQTT payload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MqttFormat {
    /// fixgate JSON, one fix per message.
    Json,
    /// OwnTracks `location` messages.
    Owntracks,
    /// One NMEA 0183 epoch per message.
    Nmea,
}

impl MqttFormat {
    /// The topic template used when none is given.
    pub fn default_topic(self) -> &'static str {
        match self {
            Self::Json => "fleet/sim/device/{device}/fix",
            Self::Owntracks => "owntracks/sim/{device}",
            // The gateway's default pattern detects NMEA by its first byte.
            Self::Nmea => "fleet/sim/device/{device}/fix",
        }
    }

    fn wire(self) -> Wire {
        match self {
            Self::Json => Wire::Json,
            Self::Owntracks => Wire::OwnTracks,
            Self::Nmea => Wire::Nmea,
        }
    }
}

/// How devices share MQTT connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Connections {
    /// One connection per device, as real trackers do.
    PerDevice,
    /// One connection for the whole fleet.
    Shared,
}

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Request format.
    pub format: HttpFormat,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Concurrent requests.
    pub workers: usize,
}

/// HTTP request formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpFormat {
    /// `POST /osmand?id=..&lat=..` with an empty body, as Traccar Client sends.
    Osmand,
    /// `POST /api/fixes` with a JSON array of positions.
    Json,
}

impl HttpFormat {
    fn wire(self) -> Wire {
        match self {
            Self::Osmand => Wire::OsmAnd,
            Self::Json => Wire::HttpJson,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Osmand => "/osmand",
            Self::Json => "/api/fixes",
        }
    }
}

impl SimulateOptions {
    /// Checks the values clap cannot: says what is wrong in one line.
    pub fn validate(&self) -> Result<(), String> {
        if self.devices == 0 {
            return Err("--devices must be at least 1".into());
        }
        if !(self.rate_hz.is_finite() && self.rate_hz > 0.0 && self.rate_hz <= 100.0) {
            return Err(format!(
                "--rate must be in (0, 100] Hz, not {}",
                self.rate_hz
            ));
        }
        let (lat, lon) = self.center;
        if !((-85.0..=85.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
            return Err(format!(
                "--center {lat},{lon} is outside latitude [-85, 85] or longitude [-180, 180]"
            ));
        }
        if !(self.noise_m.is_finite() && self.noise_m >= 0.0) {
            return Err(format!("--noise-m must be 0 or more, not {}", self.noise_m));
        }
        if let Some(o) = self.outage {
            if o.every.is_zero() || o.length >= o.every {
                return Err("--offline-for must be shorter than --offline-every".into());
            }
        }
        if self.bad_every == Some(0) {
            return Err("--bad-every must be at least 1".into());
        }
        let last = format!("{}{}", self.prefix, self.devices);
        DeviceId::new(&last).map_err(|e| format!("--prefix {:?}: {e}", self.prefix))?;
        match &self.target {
            Target::Mqtt(m) => validate_mqtt(m),
            Target::Http(h) => validate_http(h),
        }
    }

    /// The device ids, `prefix1..=prefixN`.
    pub fn device_ids(&self) -> Result<Vec<DeviceId>, String> {
        (1..=self.devices)
            .map(|i| {
                let id = format!("{}{i}", self.prefix);
                DeviceId::new(&id).map_err(|e| format!("device id {id:?}: {e}"))
            })
            .collect()
    }

    fn wire(&self) -> Wire {
        match &self.target {
            Target::Mqtt(m) => m.format.wire(),
            Target::Http(h) => h.format.wire(),
        }
    }
}

fn validate_mqtt(m: &MqttTarget) -> Result<(), String> {
    if m.qos > 1 {
        return Err(format!("--qos must be 0 or 1, not {}", m.qos));
    }
    if m.topic.is_empty() || m.topic.contains(['+', '#']) {
        return Err(format!(
            "--topic {:?} must be a non-empty topic without wildcards",
            m.topic
        ));
    }
    if m.password.is_some() && m.username.is_none() {
        return Err("--password needs --username".into());
    }
    Ok(())
}

fn validate_http(h: &HttpTarget) -> Result<(), String> {
    if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
        return Err(format!(
            "--http {:?} must start with http:// or https://",
            h.url
        ));
    }
    if h.workers == 0 {
        return Err("--http-workers must be at least 1".into());
    }
    Ok(())
}

/// Running totals, shared with the transport tasks.
#[derive(Debug, Default)]
struct Counters {
    /// Messages handed to the transport.
    sent: AtomicU64,
    /// Messages on the wire (MQTT) or answered (HTTP).
    published: AtomicU64,
    /// QoS 1 PUBACKs, or HTTP 2xx answers.
    acked: AtomicU64,
    /// Messages the transport would not take (queue full, closed).
    rejected: AtomicU64,
    /// HTTP answers other than 2xx, and HTTP transport errors.
    errors: AtomicU64,
    /// Bad payloads among `sent`.
    bad: AtomicU64,
    /// Fixes lost from full offline backlogs.
    dropped: AtomicU64,
    /// MQTT connections up now: shutdown waits for acks only while one is.
    connected: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// From the first tick to the end of shutdown.
    pub elapsed: Duration,
    /// Messages handed to the transport (including bad ones).
    pub sent: u64,
    /// Messages written to the broker (MQTT) or answered (HTTP).
    pub published: u64,
    /// QoS 1 acknowledgements, or HTTP 2xx answers.
    pub acked: u64,
    /// Messages not delivered: refused by a full queue (these are not in
    /// `sent`), answered with an HTTP error, or still unconfirmed (unacked at
    /// QoS 1, unwritten at QoS 0) when shutdown ended.
    pub failed: u64,
    /// Bad payloads sent on purpose (`--bad-every`), counted in `sent` too.
    pub bad: u64,
    /// Fixes dropped because an offline device's backlog was full.
    pub dropped: u64,
    /// Fixes still held by devices that were offline when the run ended (never sent).
    pub buffered: u64,
}

impl Summary {
    /// Messages published per second over the run.
    pub fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.published as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "elapsed={:.1}s sent={} published={} acked={} failed={} bad={} dropped={} buffered={} per_second={:.1}",
            self.elapsed.as_secs_f64(),
            self.sent,
            self.published,
            self.acked,
            self.failed,
            self.bad,
            self.dropped,
            self.buffered,
            self.per_second()
        )
    }
}

/// The transport of a run.
enum Sink {
    Mqtt(mqtt::Connections),
    Http(http::Pool),
    /// Keeps what it is handed, for tests of the engine.
    #[cfg(test)]
    Collect(std::sync::Mutex<Vec<(usize, Message)>>),
}

impl Sink {
    /// Hands over one message of device `index`; false if it was refused.
    fn send(&self, index: usize, message: Message) -> bool {
        match self {
            Self::Mqtt(m) => m.send(index, message.body),
            Self::Http(h) => h.send(index, message),
            #[cfg(test)]
            Self::Collect(all) => all.lock().map(|mut v| v.push((index, message))).is_ok(),
        }
    }

    /// Waits (up to [`ACK_GRACE`]) for what was handed over, then closes.
    async fn close(self) {
        match self {
            Self::Mqtt(m) => m.close().await,
            Self::Http(h) => h.close().await,
            #[cfg(test)]
            Self::Collect(_) => {}
        }
    }
}

/// Runs the simulator until Ctrl-C, SIGTERM or the end of `duration`.
pub async fn run(options: SimulateOptions) -> anyhow::Result<Summary> {
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(crate::signal::cancel_on_signal(
        shutdown.clone(),
        "--duration still ends the run",
    ));
    let summary = run_until(options, shutdown).await;
    signals.abort();
    summary
}

/// Runs the simulator until `shutdown` is cancelled or `duration` ends, for
/// tests and benches that stop it themselves.
pub async fn run_until(
    options: SimulateOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Summary> {
    options.validate().map_err(anyhow::Error::msg)?;
    let devices = options.device_ids().map_err(anyhow::Error::msg)?;
    let seed = options.seed.unwrap_or_else(|| fastrand::u64(..));
    tracing::info!(
        devices = devices.len(),
        rate_hz = options.rate_hz,
        seed,
        target = %describe(&options.target),
        "simulating"
    );
    let counters = Arc::new(Counters::default());
    let capacity = queue_capacity(&options);
    let sink = match &options.target {
        Target::Mqtt(m) => {
            Sink::Mqtt(mqtt::Connections::start(m, &devices, capacity, counters.clone()).await?)
        }
        Target::Http(h) => Sink::Http(http::Pool::start(h, capacity, counters.clone())),
    };
    let started = Instant::now();
    let stats = options
        .stats
        .then(|| tokio::spawn(print_stats(counters.clone(), started)));
    let mut engine = Engine::new(&options, devices, seed, counters.clone());
    drive(&mut engine, &sink, &options, started, &shutdown).await;
    sink.close().await;
    if let Some(stats) = stats {
        stats.abort();
    }
    let mut summary = summarize(&counters, &options.target, started.elapsed());
    summary.buffered = engine.backlogs.iter().map(|b| b.len() as u64).sum();
    Ok(summary)
}

fn describe(target: &Target) -> String {
    match target {
        Target::Mqtt(m) => format!("mqtt://{}:{} ({:?})", m.host, m.port, m.format),
        Target::Http(h) => format!("{} ({:?})", h.url, h.format),
    }
}

/// Room in each request queue for the worst burst of the devices behind it:
/// the live fix plus everything buffered during one outage.
fn queue_capacity(options: &SimulateOptions) -> usize {
    let buffered = options
        .outage
        .map(|o| (o.length.as_secs_f64() * options.rate_hz).ceil() as usize + 1)
        .unwrap_or(0)
        .min(BACKLOG_CAPACITY);
    let per_device = buffered + 16;
    match &options.target {
        Target::Mqtt(m) if m.connections == Connections::PerDevice => per_device,
        _ => per_device.saturating_mul(options.devices).max(1024),
    }
}

fn summarize(counters: &Counters, target: &Target, elapsed: Duration) -> Summary {
    let sent = get(&counters.sent);
    let published = get(&counters.published);
    let acked = get(&counters.acked);
    let confirmed = match target {
        Target::Mqtt(m) if m.qos == 0 => published,
        _ => acked,
    };
    Summary {
        elapsed,
        sent,
        published,
        acked,
        failed: get(&counters.rejected) + sent.saturating_sub(confirmed),
        bad: get(&counters.bad),
        dropped: get(&counters.dropped),
        buffered: 0,
    }
}

/// Progress on stderr every [`STATS_EVERY`], with the rate since the last line.
async fn print_stats(counters: Arc<Counters>, started: Instant) {
    let mut tick = tokio::time::interval_at(started + STATS_EVERY, STATS_EVERY);
    let mut last = 0;
    loop {
        tick.tick().await;
        let published = get(&counters.published);
        eprintln!(
            "simulate: {:.0}s published={published} ({:.1}/s) acked={} failed={} bad={} dropped={}",
            started.elapsed().as_secs_f64(),
            (published - last) as f64 / STATS_EVERY.as_secs_f64(),
            get(&counters.acked),
            get(&counters.rejected) + get(&counters.errors),
            get(&counters.bad),
            get(&counters.dropped),
        );
        last = published;
    }
}

/// Steps the fleet once per period and dispatches each device in its slot,
/// until `shutdown` or the end of the run.
async fn drive(
    engine: &mut Engine,
    sink: &Sink,
    options: &SimulateOptions,
    started: Instant,
    shutdown: &CancellationToken,
) {
    let count = engine.devices.len();
    let period = Duration::from_secs_f64(1.0 / options.rate_hz);
    let slots = schedule::slots_per_period(period, count);
    let mut ticker = tokio::time::interval_at(started, period / slots as u32);
    // Catch up after a stall: the rate is what a benchmark relies on.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = options.duration.map(|d| started + d);
    let mut fixes = Vec::new();
    let mut slot = 0;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = sleep_until(end) => return,
            _ = ticker.tick() => {}
        }
        if slot == 0 {
            fixes = engine.fleet.step(period.as_secs_f64(), Utc::now());
        }
        for index in schedule::slot_devices(slot, slots, count) {
            if let Some(fix) = fixes.get(index) {
                engine.dispatch(index, fix.clone(), started.elapsed(), sink);
            }
        }
        slot = (slot + 1) % slots;
    }
}

async fn sleep_until(end: Option<Instant>) {
    match end {
        Some(end) => tokio::time::sleep_until(end).await,
        None => std::future::pending().await,
    }
}

/// The fleet and each device's state between ticks.
struct Engine {
    fleet: Fleet,
    wire: Wire,
    devices: Vec<DeviceId>,
    backlogs: Vec<Backlog>,
    outage: Option<Outage>,
    bad_every: Option<u64>,
    noise_m: f64,
    /// The fix times the wire can carry (NMEA has centiseconds).
    resolution: TimeDelta,
    /// Messages generated so far, for `bad_every`.
    messages: u64,
    rng: fastrand::Rng,
    counters: Arc<Counters>,
    due: Vec<Fix>,
}

impl Engine {
    fn new(
        options: &SimulateOptions,
        devices: Vec<DeviceId>,
        seed: u64,
        counters: Arc<Counters>,
    ) -> Self {
        let wire = options.wire();
        Self {
            fleet: Fleet::new(devices.len(), options.center, seed),
            wire,
            backlogs: vec![Backlog::new(BACKLOG_CAPACITY); devices.len()],
            devices,
            outage: options.outage,
            bad_every: options.bad_every,
            noise_m: options.noise_m,
            resolution: match wire {
                Wire::Nmea => TimeDelta::milliseconds(10),
                _ => TimeDelta::milliseconds(1),
            },
            messages: 0,
            rng: fastrand::Rng::with_seed(seed ^ 0x5eed),
            counters,
            due: Vec::new(),
        }
    }

    /// Stamps device `index`'s fix with the time now and hands over whatever
    /// the device would send now.
    fn dispatch(&mut self, index: usize, fix: Fix, elapsed: Duration, sink: &Sink) {
        let fix = self.finish_fix(fix, Utc::now());
        let offline = self
            .outage
            .is_some_and(|o| o.is_offline(index, self.devices.len(), elapsed));
        let Some(backlog) = self.backlogs.get_mut(index) else {
            return;
        };
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        let dropped = backlog.dropped();
        backlog.due(fix, offline, &mut due);
        if backlog.dropped() > dropped {
            bump(&self.counters.dropped);
        }
        if self.wire == Wire::HttpJson {
            if !due.is_empty() {
                self.send(index, &due, sink);
            }
        } else {
            for fix in &due {
                self.send(index, std::slice::from_ref(fix), sink);
            }
        }
        self.due = due;
    }

    /// Sends one message carrying `fixes` (one, except for HTTP JSON), or a
    /// bad payload in its place when one is due.
    fn send(&mut self, index: usize, fixes: &[Fix], sink: &Sink) {
        let (Some(device), Some(last)) = (self.devices.get(index), fixes.last()) else {
            return;
        };
        self.messages += 1;
        let message = match self.bad_every {
            Some(n) if self.messages % n == 0 => {
                let kind = BadKind::nth(self.messages / n - 1);
                bump(&self.counters.bad);
                payload::bad(kind, self.wire, device, last)
            }
            _ if self.wire == Wire::HttpJson => Message {
                query: String::new(),
                body: payload::http_json(device, fixes),
            },
            _ => payload::encode(self.wire, device, last),
        };
        if sink.send(index, message) {
            bump(&self.counters.sent);
        } else {
            bump(&self.counters.rejected);
        }
    }

    /// Gives a fix from the fleet the time, noise, accuracy and decimals a
    /// real tracker would report.
    fn finish_fix(&mut self, mut fix: Fix, now: DateTime<Utc>) -> Fix {
        fix.time = now.duration_trunc(self.resolution).unwrap_or(now);
        if self.noise_m > 0.0 {
            let (east, north) = (
                self.gaussian() * self.noise_m,
                self.gaussian() * self.noise_m,
            );
            fix.lat += north / METRES_PER_DEGREE;
            fix.lon += east / (METRES_PER_DEGREE * fix.lat.to_radians().cos());
        }
        fix.accuracy = fix
            .hdop
            .map(|h| payload::round_to(h * UERE_M + self.noise_m, 10.0));
        realistic_decimals(fix)
    }

    /// About a standard normal value: a sum of uniforms is bell-shaped enough.
    fn gaussian(&mut self) -> f64 {
        // Four uniforms on [-0.5, 0.5) have variance 1/3; scale to 1.
        (0..4).map(|_| self.rng.f64() - 0.5).sum::<f64>() * 3f64.sqrt()
    }
}

/// The precision trackers send: ~1 cm positions, decimetres, centimetres per second.
fn realistic_decimals(mut fix: Fix) -> Fix {
    fix.lat = payload::round_to(fix.lat, 1e7);
    fix.lon = payload::round_to(fix.lon, 1e7);
    fix.alt = fix.alt.map(|a| payload::round_to(a, 10.0));
    fix.speed = fix.speed.map(|s| payload::round_to(s, 100.0));
    fix.course = fix
        .course
        .map(|c| payload::round_to(c, 10.0).rem_euclid(360.0));
    fix.hdop = fix.hdop.map(|h| payload::round_to(h, 100.0));
    fix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_name_ten_devices() {
        let o = SimulateOptions::default();
        assert_eq!(o.validate(), Ok(()));
        let ids = o.device_ids().unwrap();
        assert_eq!(ids.len(), 10);
        assert_eq!(ids[0].as_str(), "sim-1");
        assert_eq!(ids[9].as_str(), "sim-10");
    }

    #[test]
    fn validation_names_the_bad_option() {
        let bad = |edit: fn(&mut SimulateOptions)| {
            let mut o = SimulateOptions::default();
            edit(&mut o);
            o.validate().unwrap_err()
        };
        assert!(bad(|o| o.devices = 0).contains("--devices"));
        assert!(bad(|o| o.rate_hz = 0.0).contains("--rate"));
        assert!(bad(|o| o.prefix = "a/b".into()).contains("--prefix"));
        assert!(bad(|o| o.bad_every = Some(0)).contains("--bad-every"));
        assert!(
            bad(|o| o.outage = Some(Outage {
                every: Duration::from_secs(10),
                length: Duration::from_secs(10),
            }))
            .contains("--offline-for")
        );
        assert!(
            bad(|o| o.target = Target::Http(HttpTarget {
                url: "localhost:8080".into(),
                format: HttpFormat::Osmand,
                token: None,
                workers: 8,
            }))
            .contains("--http")
        );
    }

    #[test]
    fn finished_fixes_have_tracker_precision_and_an_accuracy() {
        let options = SimulateOptions {
            noise_m: 3.0,
            ..SimulateOptions::default()
        };
        let ids = options.device_ids().unwrap();
        let mut engine = Engine::new(&options, ids, 1, Arc::default());
        let now = Utc::now();
        let raw = engine.fleet.step(1.0, now).remove(0);
        let fix = engine.finish_fix(raw.clone(), now);
        assert_eq!(
            fix.time,
            now.duration_trunc(TimeDelta::milliseconds(1)).unwrap()
        );
        assert!(fix.accuracy.unwrap() >= 3.0);
        assert_eq!(fix.lat, payload::round_to(fix.lat, 1e7));
        // Noise of 3 m stays well under 30 m from the clean position.
        assert!((fix.lat - raw.lat).abs() * METRES_PER_DEGREE < 30.0);
        assert!(fix.validate().is_ok());
    }

    fn collected(sink: &Sink) -> Vec<(usize, Message)> {
        match sink {
            Sink::Collect(all) => all.lock().unwrap().clone(),
            _ => unreachable!(),
        }
    }

    fn json_time(m: &Message) -> DateTime<Utc> {
        serde_json::from_slice::<Fix>(&m.body).unwrap().time
    }

    #[test]
    fn a_device_back_from_an_outage_sends_its_backlog_oldest_first() {
        let options = SimulateOptions {
            devices: 1,
            outage: Some(Outage {
                every: Duration::from_secs(10),
                length: Duration::from_secs(3),
            }),
            ..SimulateOptions::default()
        };
        let ids = options.device_ids().unwrap();
        let mut engine = Engine::new(&options, ids, 1, Arc::default());
        let sink = Sink::Collect(Default::default());
        // The only device is offline from 5 s to 8 s.
        let mut handed = Vec::new();
        for second in 0..10 {
            let fix = engine.fleet.step(1.0, Utc::now()).remove(0);
            engine.dispatch(0, fix, Duration::from_secs(second), &sink);
            handed.push(collected(&sink).len());
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(handed, [1, 2, 3, 4, 5, 5, 5, 5, 9, 10]);
        let sent = collected(&sink);
        let times: Vec<_> = sent.iter().map(|(_, m)| json_time(m)).collect();
        // Messages 5..=8 are the three buffered fixes then the live one, in order.
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert_eq!(get(&engine.counters.sent), 10);
    }

    #[test]
    fn every_nth_message_is_bad_cycling_through_the_classes() {
        let options = SimulateOptions {
            devices: 3,
            bad_every: Some(2),
            ..SimulateOptions::default()
        };
        let ids = options.device_ids().unwrap();
        let mut engine = Engine::new(&options, ids, 1, Arc::default());
        let sink = Sink::Collect(Default::default());
        for round in 0..4 {
            let fixes = engine.fleet.step(1.0, Utc::now());
            for (i, fix) in fixes.into_iter().enumerate() {
                engine.dispatch(i, fix, Duration::from_secs(round), &sink);
            }
        }
        let sent = collected(&sink);
        assert_eq!(sent.len(), 12);
        assert_eq!(get(&engine.counters.bad), 6);
        // The oversized class is a valid fix, only too big.
        let good = |m: &Message| {
            m.body.len() < 1024
                && serde_json::from_slice::<Fix>(&m.body).is_ok_and(|f| f.validate().is_ok())
        };
        for (n, (_, m)) in sent.iter().enumerate() {
            assert_eq!(good(m), n % 2 == 0, "message {}", n + 1);
        }
        assert_eq!(
            sent[3].1.body,
            b"hello from a confused tracker: battery low, position unknown\n"
        );
        assert!(sent[5].1.body.len() > payload::OVERSIZED_BYTES);
    }

    #[test]
    fn the_shared_queue_holds_a_whole_outage_backlog_of_the_fleet() {
        let options = SimulateOptions {
            devices: 100,
            outage: Some(Outage {
                every: Duration::from_secs(60),
                length: Duration::from_secs(10),
            }),
            target: Target::Mqtt(MqttTarget {
                connections: Connections::Shared,
                ..MqttTarget::default()
            }),
            ..SimulateOptions::default()
        };
        assert_eq!(queue_capacity(&options), 100 * (11 + 16));
    }

    #[test]
    fn unconfirmed_messages_count_as_failed() {
        let c = Counters::default();
        c.sent.store(10, Ordering::Relaxed);
        c.published.store(10, Ordering::Relaxed);
        c.acked.store(7, Ordering::Relaxed);
        c.rejected.store(2, Ordering::Relaxed);
        let qos1 = Target::Mqtt(MqttTarget::default());
        assert_eq!(summarize(&c, &qos1, Duration::from_secs(1)).failed, 5);
        let qos0 = Target::Mqtt(MqttTarget {
            qos: 0,
            ..MqttTarget::default()
        });
        assert_eq!(summarize(&c, &qos0, Duration::from_secs(1)).failed, 2);
    }
}
