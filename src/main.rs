//! The `fixgate` command: the daemon and its tools.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use fixgate::config;
use fixgate::sim::publish::{
    Connections, HttpFormat, HttpTarget, MqttFormat, MqttTarget, SimulateOptions, Target,
};
use fixgate::sim::schedule::Outage;

/// GPS gateway: NMEA receivers to a durable store and a live SSE feed.
#[derive(Debug, Parser)]
#[command(name = "fixgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
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

/// Options of `fixgate simulate`.
#[derive(Debug, clap::Args)]
struct SimulateArgs {
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
    fn into_options(self) -> SimulateOptions {
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

/// `host:port`, `[v6]:port`.
fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let port = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    Ok((host.to_owned(), port))
}

/// A path to a file that can be opened now.
fn readable_file(s: &str) -> Result<PathBuf, String> {
    std::fs::File::open(s)
        .map(|_| PathBuf::from(s))
        .map_err(|e| format!("cannot read {s}: {e}"))
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { path } => return check_config(&path),
        Command::Nmea { input } => nmea(input.as_deref()),
        Command::Simulate(args) => simulate(*args),
        Command::Encode {
            input,
            gateway,
            device,
            max_records,
            batch_id,
        } => encode(
            input.as_deref(),
            &fixgate::wire::tools::EncodeOptions {
                gateway,
                device,
                max_records,
                first_id: batch_id,
            },
        ),
        Command::Decode { input } => decode(input.as_deref()),
        Command::Token { out, hash_of } => token(out.as_deref(), hash_of.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fixgate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path) -> anyhow::Result<()> {
    let config = config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let output = fixgate::daemon::logging::init(&config.log.level)
        .context("log level (log.level or RUST_LOG)")?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        log = ?output,
        "starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fixgate")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(fixgate::daemon::run(
        config,
        Some(path.to_owned()),
        Some(metrics),
    ))
}

/// Checks the configuration and, when it is valid, what it names: the access
/// tokens' files (and credentials, where `$CREDENTIALS_DIRECTORY` is set),
/// the TLS certificate and key, and the fence files. The daemon refuses to
/// start on a bad configuration, token or key pair, and runs without judging
/// geofences until bad fence files are mended.
fn check_config(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    match fixgate::access::build(
        &config.access,
        &config.http,
        fixgate::access::Credentials::SkipWithoutDirectory,
    ) {
        Ok((_, notes)) => {
            for note in notes {
                eprintln!("{}: note: {note}", path.display());
            }
        }
        Err(err) => {
            for problem in err.problems {
                eprintln!("{}: access: {problem}", path.display());
            }
            return ExitCode::FAILURE;
        }
    }
    if let Some(files) = &config.feed.tls {
        if let Err(err) = fixgate::tls::server_config(&files.cert, &files.key) {
            eprintln!("{}: feed.tls_cert / feed.tls_key: {err}", path.display());
            return ExitCode::FAILURE;
        }
    }
    match fixgate::pipeline::geofence::load_all(&config.geofence) {
        Ok(fences) => {
            let n = fences.len();
            let plural = if n == 1 { "" } else { "s" };
            println!("{}: ok ({n} fence{plural})", path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// `fixgate token`: a new token and its hash line, or the hash of one.
fn token(out: Option<&Path>, hash_of: Option<&Path>) -> anyhow::Result<()> {
    use fixgate::access::{Digest, secret};
    if let Some(input) = hash_of {
        let mut text = String::new();
        open_input(Some(input))?
            .read_to_string(&mut text)
            .context("cannot read the token")?;
        let token = text.trim();
        secret::well_formed(token).map_err(|why| anyhow::anyhow!("not a token: {why}"))?;
        println!("hash = \"{}\"", Digest::of(token));
        return Ok(());
    }
    let token = secret::generate()?;
    let hash = Digest::of(&token);
    match out {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            writeln!(file, "{token}")
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.sync_all()
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("fixgate: token written to {} (mode 0640)", path.display());
            println!("hash = \"{hash}\"");
        }
        None => {
            eprintln!("# the token: give it to the client (Authorization: Bearer <token>)");
            println!("{token}");
            eprintln!("# for its [[access.token]] entry in the configuration:");
            println!("hash = \"{hash}\"");
        }
    }
    Ok(())
}

/// A file, or standard input for `-` or nothing.
fn open_input(input: Option<&Path>) -> anyhow::Result<Box<dyn Read>> {
    Ok(match input {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p == Path::new("-") => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        ),
    })
}

/// A reader that went away (`fixgate decode | head`) is not a failure of
/// the tools that print to stdout.
fn unless_stdout_closed<E: Into<anyhow::Error>>(result: Result<(), E>) -> anyhow::Result<()> {
    let err = match result {
        Ok(()) => return Ok(()),
        Err(e) => e.into(),
    };
    let broken = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    let closed = err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(broken)
            || matches!(cause.downcast_ref(), Some(fixgate::wire::tools::ToolError::Io(e)) if broken(e))
    });
    if closed { Ok(()) } else { Err(err) }
}

fn nmea(input: Option<&Path>) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    unless_stdout_closed(
        fixgate::sources::nmea::nmea_to_json_lines(open_input(input)?, &mut out)
            .and_then(|_| out.flush()),
    )
}

fn encode(
    input: Option<&Path>,
    options: &fixgate::wire::tools::EncodeOptions,
) -> anyhow::Result<()> {
    let input = BufReader::new(open_input(input)?);
    let mut out = BufWriter::new(std::io::stdout().lock());
    unless_stdout_closed(
        fixgate::wire::tools::encode_json_lines(input, &mut out, options).map(drop),
    )
}

fn decode(input: Option<&Path>) -> anyhow::Result<()> {
    let input = BufReader::new(open_input(input)?);
    let mut out = BufWriter::new(std::io::stdout().lock());
    unless_stdout_closed(fixgate::wire::tools::decode_to_json_lines(input, &mut out).map(drop))
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let options = args.into_options();
    if let Err(message) = options.validate() {
        // Exits 2, like every other argument error clap reports.
        let mut cli = Cli::command();
        let mut command = cli
            .find_subcommand_mut("simulate")
            .map(|c| c.clone().bin_name("fixgate simulate"))
            .unwrap_or(cli);
        command
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit();
    }
    fixgate::daemon::logging::init("info").context("log level (RUST_LOG)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fixgate-sim")
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(fixgate::sim::publish::run(options))?;
    // HTTP workers still inside a request must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    println!("simulate: {summary}");
    Ok(())
}
