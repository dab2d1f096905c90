//! The `fixgate` command line: its clap definition, apart from what each
//! command does (`main.rs`), so that a test can render the man page and the
//! shell completions from it (`tests/cli.rs` includes this file) without the
//! generators being linked into the gateway's binary.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fixgate::sim::publish::{
    Connections, HttpFormat, HttpTarget, MqttFormat, MqttTarget, SimulateOptions, Target,
};
use fixgate::sim::schedule::Outage;
use fixgate_support::args::{parse_host_port, readable_file};

/// GPS gateway: NMEA receivers to a durable store and a live SSE feed.
#[derive(Debug, Parser)]
#[command(name = "fixgate", version, about, long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon.
    ///
    /// Runs in the foreground until SIGTERM or SIGINT: the sources stop, the
    /// writer drains its queue, the store is flushed, and the process exits 0.
    /// SIGHUP re-reads the configuration: the log level, the geofences,
    /// [access] and the feed's TLS files take effect at once, other changes
    /// at the next start. Under systemd (Type=notify) it reports readiness,
    /// a status line and watchdog pings. The packaged service runs
    /// `fixgate run --config /etc/fixgate/fixgate.toml`.
    Run {
        /// The configuration file.
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
    },
    /// Check a configuration file: exit 0, or print every problem as `file:line:col: message`.
    CheckConfig {
        /// The configuration file.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// Decode NMEA 0183 into one JSON line per fix epoch.
    Nmea {
        /// The NMEA log; `-` or nothing reads standard input.
        #[arg(value_name = "PATH|-")]
        input: Option<PathBuf>,
    },
    /// Simulate a fleet of GPS trackers publishing realistic tracks over MQTT or HTTP.
    ///
    /// Prints a summary line on stdout at the end: messages sent, published,
    /// acknowledged (QoS 1 PUBACK or HTTP 2xx), failed (refused, errors, or
    /// unacknowledged after a 5 s grace), bad payloads and the publish rate.
    #[command(after_help = SIMULATE_EXAMPLES)]
    Simulate(Box<SimulateArgs>),
    /// Encode JSON Lines (from `fixgate nmea` or `fixgate decode`) as
    /// length-delimited upstream batches on stdout.
    Encode {
        /// The JSON Lines; `-` or nothing reads standard input.
        #[arg(value_name = "PATH|-")]
        input: Option<PathBuf>,
        /// Gateway id of the batches [default: the lines' own, else fixgate].
        #[arg(long, value_name = "ID", value_parser = parse_id)]
        gateway: Option<fixgate::fix::DeviceId>,
        /// Device of lines that name none (as `fixgate nmea` prints them).
        #[arg(long, value_name = "ID", value_parser = parse_id)]
        device: Option<fixgate::fix::DeviceId>,
        /// Records per batch.
        #[arg(long, value_name = "N", default_value_t = fixgate::wire::DEFAULT_MAX_RECORDS,
              value_parser = parse_max_records)]
        max_records: usize,
        /// Id of the first batch; the next ones count up.
        #[arg(long, value_name = "ID", default_value_t = 1)]
        batch_id: u64,
    },
    /// Decode length-delimited upstream batches into one JSON line per record.
    Decode {
        /// The batches; `-` or nothing reads standard input.
        #[arg(value_name = "PATH|-")]
        input: Option<PathBuf>,
    },
    /// Make a random access token (32 bytes, base64url) and print it with the
    /// `hash = "sha256:…"` line for an [[access.token]] entry.
    ///
    /// The config keeps only the hash; give the token itself to the client
    /// (`Authorization: Bearer <token>`). With --out the token goes to a new
    /// file (mode 0640) instead of the terminal, for `file =` or
    /// `credential =` entries; with --hash-of the hash of an existing token
    /// (a file, or `-` for standard input) is printed.
    Token {
        /// Write the token to this new file (mode 0640; an existing file is
        /// left alone and is an error) instead of printing it.
        #[arg(long, value_name = "PATH", conflicts_with = "hash_of")]
        out: Option<PathBuf>,
        /// Print the hash line of the token in this file (`-`: standard input).
        #[arg(long, value_name = "PATH|-")]
        hash_of: Option<PathBuf>,
    },
}

/// `fixgate --help` and the man page's description.
const LONG_ABOUT: &str = "\
GPS gateway daemon: it reads GNSS receivers on serial ports and trackers that \
publish over MQTT or post over HTTP, keeps every accepted fix in a durable \
store, judges geofences, serves a live Server-Sent Events feed and a depot \
screen on the LAN, and forwards everything upstream until it is acknowledged.";

/// Shown after `fixgate --help` and in the man page.
const EXAMPLES: &str = "\
Examples:
  fixgate run --config /etc/fixgate/fixgate.toml
      Run the daemon in the foreground, as the fixgate service does.
  fixgate check-config /etc/fixgate/fixgate.toml
      Check an edited configuration before `systemctl restart fixgate`.
  fixgate nmea drive.nmea | fixgate encode --device bus-1 > drive.batches
      Decode an NMEA log and encode it as upstream batches.
  fixgate decode drive.batches | head -1
      Show what a batch holds, one JSON line per record.
  fixgate simulate --mqtt 127.0.0.1:1883 --devices 100 --duration 60s --stats
      A hundred trackers publishing to the gateway's broker for a minute.
  fixgate token --out /etc/fixgate/tokens/screens.token
      A new access token in a file, and the line for its [[access.token]].

Documentation: /usr/share/doc/fixgate/ and man fixgate-<command>.";

/// Shown after `fixgate simulate --help`.
const SIMULATE_EXAMPLES: &str = "\
Examples:
  fixgate simulate --mqtt 127.0.0.1:1883 --devices 1000 --rate 1 --duration 60s --stats
  fixgate simulate --mqtt broker:1883 --format owntracks --username u --password p
  fixgate simulate --http http://127.0.0.1:8080 --http-format osmand --token T";

/// Options of `fixgate simulate`.
#[derive(Debug, clap::Args)]
pub(crate) struct SimulateArgs {
    /// MQTT broker to publish to.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1883", value_parser = parse_host_port, conflicts_with = "http", help_heading = "Target")]
    mqtt: (String, u16),
    /// POST to this HTTP server instead of MQTT (e.g. http://127.0.0.1:8080).
    #[arg(long, value_name = "URL", help_heading = "Target")]
    http: Option<String>,

    /// Number of simulated devices.
    #[arg(long, value_name = "N", default_value_t = 10, help_heading = "Fleet")]
    devices: usize,
    /// Fixes per second per device (0.001 to 100); devices are staggered over the period.
    #[arg(long, value_name = "HZ", default_value_t = 1.0, help_heading = "Fleet")]
    rate: f64,
    /// How long to run (e.g. 30s, 5m); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = "Fleet")]
    duration: Option<Duration>,
    /// The depot the routes start from.
    #[arg(long, value_name = "LAT,LON", default_value = "52.0907,5.1214", value_parser = parse_center, allow_hyphen_values = true, help_heading = "Fleet")]
    center: (f64, f64),
    /// Seed of the routes and noise [default: random, logged at start].
    #[arg(long, value_name = "U64", help_heading = "Fleet")]
    seed: Option<u64>,
    /// Device ids are this prefix followed by 1..=N.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "sim-",
        help_heading = "Fleet"
    )]
    prefix: String,
    /// Extra position noise in metres (standard deviation per axis), on top
    /// of the fleet's own ~0.5 m.
    #[arg(
        long,
        value_name = "METRES",
        default_value_t = 0.0,
        help_heading = "Fleet"
    )]
    noise_m: f64,

    /// MQTT payload format.
    #[arg(long, value_enum, default_value_t = MqttFormat::Json, conflicts_with = "http", help_heading = "MQTT")]
    format: MqttFormat,
    /// Topic template; {device} is the device id [default: fleet/sim/device/{device}/fix;
    /// owntracks: owntracks/sim/{device}; nmea: fleet/sim/device/{device}/fix].
    #[arg(
        long,
        value_name = "TEMPLATE",
        conflicts_with = "http",
        help_heading = "MQTT"
    )]
    topic: Option<String>,
    /// MQTT QoS of every message.
    #[arg(long, value_name = "0|1", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1), conflicts_with = "http", help_heading = "MQTT")]
    qos: u8,
    #[command(flatten)]
    login: MqttLogin,
    /// Client ids are this prefix followed by the device id (or `shared`).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "fixgate-",
        conflicts_with = "http",
        help_heading = "MQTT"
    )]
    client_id_prefix: String,
    /// One MQTT connection per device (as real trackers do), or one shared by all.
    #[arg(long, value_enum, default_value_t = Connections::PerDevice, conflicts_with = "http", help_heading = "MQTT")]
    connections: Connections,
    /// Connect with TLS, trusting the CA certificate in this PEM file.
    #[arg(
        long,
        value_name = "PATH",
        value_parser = readable_file,
        conflicts_with = "http",
        help_heading = "MQTT"
    )]
    tls_ca: Option<PathBuf>,

    /// HTTP request format: osmand = POST URL/osmand?id=..&lat=.. with an empty
    /// body (as Traccar Client); json = POST URL/api/fixes with a JSON array.
    #[arg(long, value_enum, default_value_t = HttpFormat::Osmand, requires = "http", help_heading = "HTTP")]
    http_format: HttpFormat,
    /// Sent as the header `Authorization: Bearer TOKEN` (never in the query string).
    #[arg(long, value_name = "TOKEN", requires = "http", help_heading = "HTTP")]
    token: Option<String>,
    /// Concurrent HTTP requests.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8,
        requires = "http",
        help_heading = "HTTP"
    )]
    http_workers: usize,

    /// Each device goes offline this often (staggered across the fleet),
    /// buffers its fixes and sends them, oldest first, when back.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "offline_for", help_heading = "Faults")]
    offline_every: Option<Duration>,
    /// How long each outage lasts.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "offline_every", help_heading = "Faults")]
    offline_for: Option<Duration>,
    /// Every Nth message of the fleet is a bad payload instead, cycling through
    /// malformed, unknown format, oversized (200 KiB), latitude 123, no latitude.
    #[arg(long, value_name = "N", help_heading = "Faults")]
    bad_every: Option<u64>,

    /// Print progress to stderr every 10 s (the summary line at the end is always printed).
    #[arg(long)]
    stats: bool,
}

/// MQTT credentials for `simulate`.
#[derive(Debug, clap::Args)]
struct MqttLogin {
    /// MQTT user name.
    #[arg(
        long,
        value_name = "USER",
        conflicts_with = "http",
        help_heading = "MQTT"
    )]
    username: Option<String>,
    /// MQTT password.
    #[arg(
        long,
        value_name = "PASSWORD",
        requires = "username",
        help_heading = "MQTT"
    )]
    password: Option<String>,
}

impl SimulateArgs {
    pub(crate) fn into_options(self) -> SimulateOptions {
        let target = match self.http {
            Some(url) => Target::Http(HttpTarget {
                url,
                format: self.http_format,
                token: self.token,
                workers: self.http_workers,
            }),
            None => Target::Mqtt(MqttTarget {
                host: self.mqtt.0,
                port: self.mqtt.1,
                format: self.format,
                topic: self
                    .topic
                    .unwrap_or_else(|| self.format.default_topic().to_owned()),
                qos: self.qos,
                username: self.login.username,
                password: self.login.password,
                client_id_prefix: self.client_id_prefix,
                connections: self.connections,
                tls_ca: self.tls_ca,
            }),
        };
        let outage = match (self.offline_every, self.offline_for) {
            (Some(every), Some(length)) => Some(Outage { every, length }),
            _ => None,
        };
        SimulateOptions {
            target,
            devices: self.devices,
            rate_hz: self.rate,
            duration: self.duration,
            center: self.center,
            seed: self.seed,
            prefix: self.prefix,
            noise_m: self.noise_m,
            outage,
            bad_every: self.bad_every,
            stats: self.stats,
        }
    }
}

/// A gateway or device id.
fn parse_id(s: &str) -> Result<fixgate::fix::DeviceId, String> {
    fixgate::fix::DeviceId::new(s).map_err(|e| e.to_string())
}

/// Records per batch: 1 to what a decoder accepts.
fn parse_max_records(s: &str) -> Result<usize, String> {
    let max = fixgate::wire::MAX_BATCH_RECORDS;
    s.parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("{s:?} is not a number from 1 to {max}"))
}

/// `lat,lon` in degrees.
fn parse_center(s: &str) -> Result<(f64, f64), String> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?} is not LAT,LON"))?;
    let number = |v: &str| {
        v.trim()
            .parse::<f64>()
            .map_err(|_| format!("{v:?} is not a number of degrees"))
    };
    Ok((number(lat)?, number(lon)?))
}
