//! The TOML configuration: schema, defaults and validation.
//!
//! [`parse`] checks a whole document and reports every problem it finds, each
//! with `file:line:col`, so that `fixgate check-config` shows an operator all
//! of them in one pass instead of one per edit-and-restart cycle on a gateway
//! they may only reach over a slow link.
//!
//! Every section is optional and every key except a source's `device` and
//! `path` has a default; unknown keys are errors, because a misspelt key that
//! is silently ignored leaves a gateway running on a default for years.

mod error;
mod level;
mod read;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fix::DeviceId;

pub use error::{ConfigError, Problem};

/// Reads and checks the configuration file at `path`.
///
/// A file that cannot be read is reported as a problem without a line.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => parse(&source, &file),
        Err(err) => Err(ConfigError::new(vec![Problem::whole_file(
            file,
            format!("cannot read: {err}"),
        )])),
    }
}

/// Checks a configuration document; `file_name` is only used in problem reports.
pub fn parse(source: &str, file_name: &str) -> Result<Config, ConfigError> {
    read::read(source, file_name).map_err(ConfigError::new)
}

/// The whole configuration, every value resolved and checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `[gateway]`: who this gateway is.
    pub gateway: Gateway,
    /// `[store]`: the durable store.
    pub store: Store,
    /// `[pipeline]`: the path from sources to the writer.
    pub pipeline: Pipeline,
    /// `[feed]`: the HTTP/SSE server.
    pub feed: Feed,
    /// `[log]`: diagnostics.
    pub log: Log,
    /// `[[serial]]`: NMEA receivers on serial ports, in file order.
    pub serial: Vec<Serial>,
    /// `[[replay]]`: NMEA log files played back as if live, in file order.
    pub replay: Vec<Replay>,
    /// `[demo]`: the simulated fleet; `None` when the section is absent.
    pub demo: Option<Demo>,
    /// `[mqtt]`: MQTT intake.
    pub mqtt: Mqtt,
    /// `[http]`: HTTP intake.
    pub http: Http,
    /// `[devices]`: presence and limits.
    pub devices: Devices,
    /// `[filter]`: which fixes the pipeline drops.
    pub filter: crate::pipeline::filter::FilterOptions,
    /// `[uplink]`: batches upstream.
    pub uplink: Uplink,
    /// `[geofence]`: fences and how fixes are judged against them.
    pub geofence: Geofence,
    /// `[map]`: what the depot screen draws under the vehicles.
    pub map: Map,
    /// `[[group]]`: device groups by patterns of device ids.
    pub groups: Vec<crate::groups::GroupRule>,
    /// `[access]`: who may read and write over HTTP.
    pub access: Access,
    /// `[gpsd]`: gpsd's JSON protocol for existing GPS tools.
    pub gpsd: Gpsd,
}

/// `[gpsd]`: a server of gpsd's JSON protocol (`?WATCH`, `?POLL`, ...), so
/// that tools written for gpsd (gpspipe, cgps, libgps, the Python `gps`
/// module) read the gateway's receivers. Off by default; loopback by
/// default, since the protocol has no authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpsd {
    /// Serve the protocol.
    pub enabled: bool,
    /// Address the server binds (gpsd's port is 2947).
    pub listen: SocketAddr,
    /// Most clients connected at once; a connection beyond is closed.
    pub max_clients: usize,
    /// The explicit opt-in to a `listen` beyond loopback: anyone allowed
    /// by `allow_from` then reads the positions without a token.
    pub anonymous_network: bool,
    /// Client networks that may connect (loopback by default).
    pub allow_from: Vec<crate::access::rate::Net>,
    /// A client whose socket takes no byte this long while a line waits to
    /// be written is closed.
    pub stall_timeout: Duration,
    /// Devices other than the receivers (MQTT and HTTP trackers) that are
    /// served too, by device-id pattern; none by default.
    pub trackers: Vec<crate::access::DevicePattern>,
}

impl Default for Gpsd {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 2947)),
            max_clients: 64,
            anonymous_network: false,
            allow_from: crate::access::rate::Net::loopback(),
            stall_timeout: Duration::from_secs(10),
            trackers: Vec::new(),
        }
    }
}

/// `[access]`: tokens and their scopes, what anonymous requests may do, and
/// the browser origins allowed to call the API. See [`crate::access`].
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    /// `[[access.token]]`, in file order.
    pub tokens: Vec<AccessToken>,
    /// `access.anonymous`: scopes anonymous requests get from any address
    /// (the explicit opt-in to anonymous LAN access).
    pub anonymous: crate::access::Scopes,
    /// `access.anonymous_loopback`: scopes anonymous requests get from a
    /// loopback address besides.
    pub anonymous_loopback: crate::access::Scopes,
    /// `access.cors_origins`: origins whose pages may call the API.
    pub cors_origins: Vec<String>,
}

impl Default for Access {
    /// Nothing anonymous beyond loopback; everything on loopback.
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            anonymous: crate::access::Scopes::NONE,
            anonymous_loopback: crate::access::Scopes::ALL,
            cors_origins: Vec::new(),
        }
    }
}

/// One `[[access.token]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessToken {
    /// For logs and metric labels: 1–32 of `A-Z a-z 0-9 . _ -`, unique.
    pub name: String,
    /// Where the secret is.
    pub secret: TokenSecret,
    /// What it may do.
    pub scopes: crate::access::Scopes,
    /// `read_groups`: only devices of these groups; `None`: every device.
    pub read_groups: Option<Vec<String>>,
    /// `write_devices`: only devices matching these; `None`: every device.
    pub write_devices: Option<Vec<crate::access::DevicePattern>>,
}

/// Where a token's secret is: never in the config in plain text.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSecret {
    /// `hash = "sha256:…"`: its digest.
    Hash(crate::access::Digest),
    /// `file = "/path"`: a file holding it, not readable by every user,
    /// read at start and on SIGHUP.
    File(PathBuf),
    /// `credential = "name"`: a systemd credential (`LoadCredential=`), read
    /// from `$CREDENTIALS_DIRECTORY` at start and on SIGHUP.
    Credential(String),
}

/// `[map]`: the depot screen's base map and view; by default none (fences,
/// trails and a scale bar on a plain background) and no request leaves the
/// gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Map {
    /// A local raster tile archive (PMTiles) the daemon serves at
    /// `/tiles/<file name>`, so the map works offline.
    pub tiles: Option<std::path::PathBuf>,
    /// An online tile URL template (`https://…/{z}/{x}/{y}.png`), for depots
    /// with internet; its origin is the only one the page may reach.
    pub tile_url: Option<String>,
    /// Credit shown for the tiles (as their licence asks).
    pub attribution: Option<String>,
    /// Highest zoom level the tiles have.
    pub max_zoom: Option<u8>,
    /// Where the map opens before any device has reported: `[lat, lon]`.
    pub center: Option<[f64; 2]>,
    /// A device whose last position is older than this is drawn as stale.
    pub stale_after: Duration,
}

impl Default for Map {
    fn default() -> Self {
        Self {
            tiles: None,
            tile_url: None,
            attribution: None,
            max_zoom: None,
            center: None,
            stale_after: Duration::from_secs(60),
        }
    }
}

/// `[gateway]`: the identity of this gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// Names this gateway upstream; follows the [`DeviceId`] rules.
    pub id: DeviceId,
    /// When the system clock may date fixes from receivers that send no date.
    pub clock: ClockTrust,
}

/// `gateway.clock`: policy for using the system clock as a date source.
///
/// A Raspberry Pi has no real-time clock, so until NTP has set it the system
/// date is whatever the last shutdown left; see `crate::sources::clock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockTrust {
    /// `"auto"`: trust it while the kernel says it is synchronised.
    #[default]
    Auto,
    /// `"always"`: a gateway with a battery-backed RTC.
    Always,
    /// `"never"`: only receivers that send a date (RMC, ZDA) produce fixes.
    Never,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            id: DeviceId::new("fixgate").expect("the default gateway id is a valid id"),
            clock: ClockTrust::default(),
        }
    }
}

/// `[store]`: where and how accepted fixes are made durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    /// The sled directory; a relative path is relative to the working directory.
    pub path: PathBuf,
    /// Group-commit interval: at most this much accepted data is lost on power failure.
    pub flush_interval: Duration,
    /// sled page cache size in MiB.
    pub cache_mb: u64,
    /// Most MiB the store may occupy on disk (sled's files).
    pub max_size_mb: u64,
    /// Fraction of the size limit at which the budget starts freeing space.
    pub high_water: f64,
    /// MiB of free space the store leaves on its file system for others.
    pub min_free_mb: u64,
    /// How positions are thinned before any is dropped.
    pub thin: crate::store::budget::Thin,
}

impl Store {
    /// `thin_tolerance` when not given: GPS noise is a few metres, and a
    /// track kept within 10 m still shows which side of a road a vehicle took.
    pub const DEFAULT_THIN_TOLERANCE_M: f64 = 10.0;
    /// `thin_interval` when not given.
    pub const DEFAULT_THIN_INTERVAL: Duration = Duration::from_secs(30);
}

impl Default for Store {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/fixgate/store"),
            flush_interval: Duration::from_secs(1),
            cache_mb: 16,
            max_size_mb: 256,
            high_water: 0.8,
            min_free_mb: 64,
            thin: crate::store::budget::Thin::DouglasPeucker {
                tolerance_m: Self::DEFAULT_THIN_TOLERANCE_M,
            },
        }
    }
}

/// `[pipeline]`: the single-writer pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Capacity of the bounded channel between the sources and the writer.
    pub queue: usize,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self { queue: 1024 }
    }
}

/// `[feed]`: the live SSE feed and its HTTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct Feed {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Interval between SSE keep-alive comments.
    pub keepalive: Duration,
    /// The `retry:` reconnection hint sent to browsers.
    pub retry: Duration,
    /// Most SSE clients served at once; a new one beyond takes the place
    /// of a stalled or crowded one.
    pub max_clients: usize,
    /// Most HTTP connections open at once (feed, snapshot, intake); a few
    /// more are always kept for `/healthz` and `/metrics`.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and the most a
    /// keep-alive connection may idle between requests.
    pub header_timeout: Duration,
    /// Time a client has to send a request's whole body.
    pub body_timeout: Duration,
    /// A connection whose socket takes no byte for this long while a
    /// response waits to be written is closed (a client that stopped reading).
    pub stall_timeout: Duration,
    /// Snapshot responses (`/api/devices`, `/api/geofences`, SSE resets)
    /// being built or sent at once; beyond, `503`.
    pub max_snapshots: usize,
    /// `tls_cert` and `tls_key`: serve HTTPS only, with this certificate
    /// chain and key (PEM); re-read on SIGHUP.
    pub tls: Option<ServerCert>,
}

/// The HTTPS server's certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerCert {
    /// The certificate chain, the server's own first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080)),
            keepalive: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            max_clients: 256,
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            max_snapshots: 16,
            tls: None,
        }
    }
}

/// `[log]`: diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// A directive list of levels per module path such as `info,fixgate::sources=debug`;
    /// `RUST_LOG` overrides it at run time.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
        }
    }
}

/// One `[[serial]]` NMEA receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Serial {
    /// The device its fixes are attributed to; unique across all sources.
    pub device: DeviceId,
    /// The serial port, preferably a stable `/dev/serial/by-id/...` link.
    pub path: PathBuf,
    /// The fixed line speed, one of [`Serial::BAUD_RATES`]; with `hunt` set
    /// (`baud = "auto"`) the first rate of the hunt, only a starting point.
    pub baud: u32,
    /// `baud = "auto"`: how the receiver's line speed is found; `None` for a
    /// fixed rate.
    pub hunt: Option<Hunt>,
    /// Reopen the port when no valid sentence arrives for this long.
    pub silence_timeout: Duration,
    /// First back-off delay after an unplug or a failed open.
    pub reconnect_min: Duration,
    /// Back-off ceiling; never below `reconnect_min`.
    pub reconnect_max: Duration,
    /// chrony's `refclock SOCK` socket to send this receiver's time to;
    /// `None` sends nothing. Absolute, unique across receivers.
    pub chrony_socket: Option<PathBuf>,
}

impl Serial {
    /// The standard line speeds accepted for `baud`.
    pub const BAUD_RATES: [u32; 11] = [
        1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600,
    ];

    // Named so that the reader can fill in defaults before it has a device id.
    const DEFAULT_BAUD: u32 = 9600;
    const DEFAULT_SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
    const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(500);
    const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);

    /// A receiver on `path` with every other setting at its default.
    pub fn new(device: DeviceId, path: impl Into<PathBuf>) -> Self {
        Self {
            device,
            path: path.into(),
            baud: Self::DEFAULT_BAUD,
            hunt: None,
            silence_timeout: Self::DEFAULT_SILENCE_TIMEOUT,
            reconnect_min: Self::DEFAULT_RECONNECT_MIN,
            reconnect_max: Self::DEFAULT_RECONNECT_MAX,
            chrony_socket: None,
        }
    }
}

/// How a `[[serial]]` receiver with `baud = "auto"` is searched for: each
/// rate is listened to for one window, until a sentence with a good checksum
/// arrives. The rate found last time (remembered in the store) is tried first.
#[derive(Debug, Clone, PartialEq)]
pub struct Hunt {
    /// The rates tried, in this order after the remembered one; no repeats,
    /// each one of [`Serial::BAUD_RATES`].
    pub rates: Vec<u32>,
    /// How long one rate is listened to before the next is tried.
    pub window: Duration,
}

impl Hunt {
    /// The rates receivers ship at. 230400 and above are left out: few
    /// receivers use them, and each rate tried costs a window; list them in
    /// `hunt_rates` to have them tried.
    pub const DEFAULT_RATES: [u32; 6] = [4800, 9600, 19200, 38400, 57600, 115200];
    /// Long enough for a 1 Hz receiver to finish at least one sentence in
    /// a window, wherever in its second the window starts.
    pub const DEFAULT_WINDOW: Duration = Duration::from_millis(2500);

    /// The default hunt: [`Hunt::DEFAULT_RATES`], [`Hunt::DEFAULT_WINDOW`].
    pub fn new() -> Self {
        Self {
            rates: Self::DEFAULT_RATES.to_vec(),
            window: Self::DEFAULT_WINDOW,
        }
    }
}

impl Default for Hunt {
    fn default() -> Self {
        Self::new()
    }
}

/// One `[[replay]]` source: an NMEA log file played back like `gpsfake`.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The device its fixes are attributed to; unique across all sources.
    pub device: DeviceId,
    /// The NMEA log; a relative path is relative to the working directory.
    pub path: PathBuf,
    /// How fast to play it back.
    pub pace: Pace,
    /// Start again at the beginning after the end of the file.
    pub r#loop: bool,
}

impl Replay {
    /// A replay of `path` at recorded pace, played once.
    pub fn new(device: DeviceId, path: impl Into<PathBuf>) -> Self {
        Self {
            device,
            path: path.into(),
            pace: Pace::Recorded,
            r#loop: false,
        }
    }
}

/// Playback speed of a [`Replay`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Pace {
    /// Follow the time fields recorded in the log (`"recorded"`).
    #[default]
    Recorded,
    /// As fast as the pipeline accepts fixes (`"max"`).
    Max,
    /// This many epochs per second, whatever the log says (`"5hz"`).
    Rate(f64),
}

/// `[demo]`: a built-in fleet of simulated receivers, for demos without hardware.
#[derive(Debug, Clone, PartialEq)]
pub struct Demo {
    /// Fleet size; the devices are named `demo-1` … `demo-N`.
    pub vehicles: u32,
    /// `[lat, lon]` in degrees of the depot the routes circle.
    pub center: [f64; 2],
    /// Fixes per second per vehicle.
    pub rate_hz: f64,
    /// How the fleet's fixes reach the pipeline.
    pub via: DemoVia,
}

/// `demo.via`: the path the demo fleet takes into the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoVia {
    /// `"nmea"`: NMEA text through the decoder, in process, like serial receivers.
    #[default]
    Nmea,
    /// `"mqtt"`: `fixgate simulate` publishing fixgate JSON to the embedded
    /// broker over TCP, one connection per vehicle, like real trackers.
    Mqtt,
}

impl Demo {
    /// The device ids of the fleet, `demo-1` … `demo-N`.
    pub fn device_ids(&self) -> Vec<DeviceId> {
        (1..=self.vehicles)
            .map(|n| DeviceId::new(&format!("demo-{n}")).expect("demo-N is a valid device id"))
            .collect()
    }
}

impl Default for Demo {
    fn default() -> Self {
        Self {
            vehicles: 5,
            center: [52.0907, 5.1214],
            rate_hz: 1.0,
            via: DemoVia::default(),
        }
    }
}

/// `[mqtt]`: devices that publish over MQTT.
#[derive(Debug, Clone, PartialEq)]
pub struct Mqtt {
    /// Which broker the devices publish to.
    pub broker: Broker,
    /// `[[mqtt.topic]]`: topic patterns to subscribe to, in file order.
    pub topics: Vec<Topic>,
    /// Largest payload accepted, in bytes; larger ones are refused by the
    /// embedded broker and counted as `oversized` from an external one.
    pub max_payload: usize,
}

impl Default for Mqtt {
    fn default() -> Self {
        Self {
            broker: Broker::Embedded(Embedded::default()),
            topics: Topic::defaults(),
            max_payload: 64 * 1024,
        }
    }
}

/// `mqtt.broker`: where the devices' messages come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Broker {
    /// `"off"`: no MQTT intake.
    Off,
    /// `"embedded"`: fixgate runs its own MQTT intake server.
    Embedded(Embedded),
    /// `"external"`: fixgate subscribes to an existing broker (rumqttc).
    External(External),
}

/// The embedded broker's settings (`[mqtt]` with `broker = "embedded"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// Address the broker listens on.
    pub listen: SocketAddr,
    /// Most device connections at once, all logins together.
    pub max_connections: usize,
    /// Most connections at once of one login (a device
    /// needs one; a few more cover reconnects that overlap the old socket).
    pub max_connections_per_user: usize,
    /// Most QoS 2 messages one connection may leave awaiting their PUBREL.
    /// (QoS 1 needs no window: each message is acknowledged once queued.)
    pub max_inflight: usize,
    /// Time a new connection has to send its CONNECT.
    pub connection_timeout: Duration,
    /// Every login by name, from `[mqtt.users]` and `[[mqtt.login]]`;
    /// empty means anonymous access.
    pub logins: std::collections::BTreeMap<String, MqttLogin>,
    /// What anonymous clients may do (only without logins): publish for
    /// any device, subscribe within `mqtt.anonymous_subscribe`.
    pub anonymous: crate::sources::mqtt::scope::Scope,
    /// Most subscriptions at once, all connections together.
    pub max_subscriptions: usize,
    /// Most subscriptions at once of one connection.
    pub max_subscriptions_per_connection: usize,
}

impl Default for Embedded {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 1883)),
            max_connections: 2000,
            max_connections_per_user: 16,
            max_inflight: 100,
            connection_timeout: Duration::from_secs(5),
            logins: Default::default(),
            anonymous: crate::sources::mqtt::scope::Scope::legacy(),
            max_subscriptions: 1000,
            max_subscriptions_per_connection: 16,
        }
    }
}

/// One login of the embedded broker.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttLogin {
    /// The password, kept as its digest only.
    pub secret: crate::util::secret::SecretHash,
    /// What the login may publish and subscribe to.
    pub scope: crate::sources::mqtt::scope::Scope,
    /// Where it is configured.
    pub form: LoginForm,
}

/// Where a login is configured, for messages about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginForm {
    /// `[mqtt.users]`: `"user" = "password"`, any device, no subscriptions.
    Users,
    /// `[[mqtt.login]]`: a hashed or stored secret and its own scope.
    Login,
}

/// How to reach an MQTT broker the gateway connects to as a client: the
/// external intake broker and the upstream one take the same keys.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttBroker {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883, or 8883 with TLS).
    pub port: u16,
    /// Connect with TLS (rustls, ring).
    pub tls: bool,
    /// PEM CA bundle to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// MQTT username.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<String>,
    /// Client id; each use has its own default.
    pub client_id: Option<String>,
    /// MQTT keep-alive interval.
    pub keep_alive: Duration,
}

impl Default for MqttBroker {
    fn default() -> Self {
        Self {
            host: "localhost".to_owned(),
            port: 1883,
            tls: false,
            ca_file: None,
            username: None,
            password: None,
            client_id: None,
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// An existing broker to subscribe to (`[mqtt]` with `broker = "external"`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct External {
    /// Where it is; the client id defaults to `fixgate-<gateway.id>`, stable so
    /// that the broker keeps our session across reconnects.
    pub broker: MqttBroker,
    /// Subscribe as `$share/<group>/<filter>` so gateways split the devices.
    pub share_group: Option<String>,
}

/// One `[[mqtt.topic]]`: a topic pattern, how it names devices and its payload format.
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    /// The pattern, e.g. `fleet/{fleet}/device/{device}/fix`.
    pub pattern: crate::sources::topic::TopicPattern,
    /// How its payloads are read.
    pub format: crate::sources::payload::Format,
}

impl Topic {
    /// Patterns used when the file names none: fixgate JSON (or NMEA) under
    /// `fleet/…`, and the OwnTracks apps' default topic.
    pub fn defaults() -> Vec<Topic> {
        use crate::sources::payload::Format;
        use crate::sources::topic::TopicPattern;
        let fleet = TopicPattern::parse("fleet/{fleet}/device/{device}/fix", None)
            .and_then(|p| p.with_group("{fleet}"))
            .expect("the default fleet pattern is valid");
        let owntracks = TopicPattern::parse("owntracks/{user}/{device}", Some("{user}.{device}"))
            .expect("the default OwnTracks pattern is valid");
        vec![
            Topic {
                pattern: fleet,
                format: Format::Auto,
            },
            Topic {
                pattern: owntracks,
                format: Format::OwnTracks,
            },
        ]
    }
}

/// `[http]`: devices that post fixes to the feed's HTTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    /// Accept `POST /api/fixes` and the OsmAnd protocol.
    pub enabled: bool,
    /// Deprecated (use `[[access.token]]`): a token every device may use
    /// (`Authorization: Bearer` or `?token=`); a write token for every device
    /// but those of `tokens`, and while it is set anonymous requests may not
    /// post, from loopback either.
    pub token: Option<String>,
    /// Deprecated (use `[[access.token]]` with `write_devices`): `[http.tokens]`,
    /// device → its own token; such a device must use it.
    pub tokens: std::collections::BTreeMap<DeviceId, String>,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Requests per client address to the intake, sustained; `None`: no limit.
    pub rate_limit: Option<crate::access::rate::Rate>,
    /// Requests per client address the intake takes at once beyond the rate.
    pub rate_burst: u32,
    /// Client addresses the rate limit leaves alone (by default loopback:
    /// local relays and the simulator).
    pub rate_limit_exempt: Vec<crate::access::rate::Net>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            enabled: true,
            token: None,
            tokens: Default::default(),
            max_body: 1024 * 1024,
            rate_limit: Some(crate::access::rate::Rate { per_second: 50.0 }),
            rate_burst: 100,
            rate_limit_exempt: crate::access::rate::Net::loopback(),
        }
    }
}

/// `[devices]`: bookkeeping of the devices the gateway hears from.
#[derive(Debug, Clone, PartialEq)]
pub struct Devices {
    /// Silence after which a device is reported offline.
    pub offline_after: Duration,
    /// Most devices tracked at once; fixes of further new devices are dropped.
    pub max_devices: usize,
}

impl Default for Devices {
    fn default() -> Self {
        Self {
            offline_after: Duration::from_secs(120),
            max_devices: 10_000,
        }
    }
}

/// `[uplink]`: how stored events go upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    /// Where batches go; `Off` keeps everything on the gateway.
    pub transport: UplinkTransport,
    /// A batch closes at this many records...
    pub max_records: usize,
    /// ... or this long after its first record became durable.
    pub max_age: Duration,
    /// Records per second drained from a backlog after an outage.
    pub backlog_rate: u32,
    /// Batches sent and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// A batch unacknowledged this long counts the connection as lost.
    pub ack_timeout: Duration,
    /// First wait after a failure; doubles (with jitter) up to `retry_max`.
    pub retry_min: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
}

impl Default for Uplink {
    fn default() -> Self {
        Self {
            transport: UplinkTransport::Off,
            max_records: crate::wire::DEFAULT_MAX_RECORDS,
            max_age: Duration::from_secs(5),
            backlog_rate: 2000,
            max_in_flight: 8,
            ack_timeout: Duration::from_secs(30),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// `[geofence]`: the fences (from files and inline) and the hysteresis.
#[derive(Debug, Clone, PartialEq)]
pub struct Geofence {
    /// GeoJSON fence files, read by [`crate::pipeline::geofence::load_all`]; a relative
    /// path is relative to the working directory, like every path here.
    pub files: Vec<PathBuf>,
    /// `[[geofence.fence]]`: fences written in the configuration, checked.
    pub fences: Vec<crate::pipeline::geofence::Fence>,
    /// How fixes are judged against the fences.
    pub options: crate::pipeline::geofence::Options,
    /// How often the files are checked for changes; zero: never.
    pub watch_interval: Duration,
}

impl Default for Geofence {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            fences: Vec::new(),
            options: crate::pipeline::geofence::Options::default(),
            watch_interval: Duration::from_secs(2),
        }
    }
}

/// `uplink.transport`: where batches go.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum UplinkTransport {
    /// No uplink.
    #[default]
    Off,
    /// MQTT QoS 1 publishes, one batch per message.
    Mqtt(UplinkMqtt),
    /// HTTP(S) POSTs, one batch per request.
    Http(UplinkHttp),
}

/// The upstream MQTT broker.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkMqtt {
    /// Where it is; the client id defaults to `fixgate-<gateway.id>-up`.
    pub broker: MqttBroker,
    /// Client certificate and key (AWS IoT and similar brokers).
    pub client_cert: Option<crate::tls::ClientCert>,
    /// Topic; `{gateway}` is replaced by the gateway id.
    pub topic: String,
}

impl Default for UplinkMqtt {
    fn default() -> Self {
        Self {
            broker: MqttBroker::default(),
            client_cert: None,
            topic: "fixgate/{gateway}/batches".to_owned(),
        }
    }
}

/// The upstream HTTP(S) endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkHttp {
    /// The URL batches are POSTed to (`http://` or `https://`).
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// PEM CA bundle to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key.
    pub client_cert: Option<crate::tls::ClientCert>,
    /// Whole-request timeout.
    pub timeout: Duration,
}
