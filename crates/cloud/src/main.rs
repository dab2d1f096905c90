//! `fixgate-receive`: the reference receiver of the batches fixgate gateways
//! send upstream, and the start of the cloud side. (Formerly `fixgate
//! receive`, with the same options; it is not in the gateway's binary.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fixgate_cloud::land::PgOptions;
use fixgate_cloud::receive::mqtt::TlsSource;
use fixgate_cloud::receive::{HttpSource, MqttSource, ReceiveOptions, Source};
use fixgate_support::args::{parse_host_port, readable_file};
use fixgate_support::tls::ClientCert;

/// Options of `fixgate-receive`.
#[derive(Debug, Parser)]
#[command(
    name = "fixgate-receive",
    version,
    about = "Receive fixgate gateways' upstream batches over MQTT or HTTP: every record once as a JSON line on stdout",
    long_about = "Receive fixgate gateways' upstream batches over MQTT or HTTP, as the cloud would: every record once as a JSON line on stdout.\n\nEach line is the event's JSON plus `event`, `seq`, `gateway`, `batch` and `kind`. On stderr, one JSON line each: `gap` (numbers no batch has accounted for yet), `gap_filled`, `error` (a refused batch) and, on SIGINT or SIGTERM, `summary`. A batch is acknowledged only once its lines are flushed.",
    group = clap::ArgGroup::new("source").required(true).args(["mqtt", "http"])
)]
struct Cli {
    /// Subscribe to batches on this MQTT broker (QoS 1, persistent session).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port, help_heading = "Source")]
    mqtt: Option<(String, u16)>,
    /// Take batches as HTTP POSTs on this address (port 0: any free port, printed on stderr).
    #[arg(long, value_name = "ADDR", help_heading = "Source")]
    http: Option<SocketAddr>,

    /// The subscription filter.
    #[arg(
        long,
        value_name = "FILTER",
        default_value = "fixgate/+/batches",
        conflicts_with = "http",
        help_heading = "MQTT"
    )]
    topic: String,
    /// The client id, under which the broker keeps the session (and queues
    /// batches while the receiver is down).
    #[arg(
        long,
        value_name = "ID",
        default_value = "fixgate-receive",
        conflicts_with = "http",
        help_heading = "MQTT"
    )]
    client_id: String,
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
    /// Connect to the broker with TLS (the system's CA roots unless --ca-file).
    #[arg(long, conflicts_with = "http", help_heading = "MQTT")]
    tls: bool,
    /// Trust the CA certificates in this PEM file.
    #[arg(long, value_name = "PATH", value_parser = readable_file, requires = "tls", help_heading = "MQTT")]
    ca_file: Option<PathBuf>,
    /// Present this client certificate (PEM), with --key.
    #[arg(long, value_name = "PATH", value_parser = readable_file, requires_all = ["tls", "key"], help_heading = "MQTT")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PATH", value_parser = readable_file, requires = "cert", help_heading = "MQTT")]
    key: Option<PathBuf>,

    /// The path batches are POSTed to.
    #[arg(long, value_name = "PATH", default_value = "/batches", value_parser = parse_route, conflicts_with = "mqtt", help_heading = "HTTP")]
    path: String,

    /// Subscribe as a member of this shared subscription group
    /// (`$share/NAME/<topic>`): several receivers split the batches.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "http",
        help_heading = "MQTT"
    )]
    share_group: Option<String>,

    /// Land batches in PostgreSQL (with PostGIS) instead of printing them: a
    /// libpq connection string or URL, e.g. "host=/run/postgresql user=fixgate dbname=fixgate".
    /// A batch is acknowledged only once its transaction has committed.
    /// Read from $FIXGATE_POSTGRES when not given, which keeps a password
    /// out of the command line other users can see.
    #[arg(
        long,
        value_name = "CONNINFO",
        env = "FIXGATE_POSTGRES",
        hide_env_values = true,
        help_heading = "PostgreSQL"
    )]
    postgres: Option<String>,
    /// TLS to PostgreSQL, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "PATH", value_parser = readable_file, requires = "postgres", help_heading = "PostgreSQL")]
    postgres_ca_file: Option<PathBuf>,
    /// Connections to PostgreSQL (batches landing at once).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..), help_heading = "PostgreSQL")]
    pool_size: u16,

    /// Serve GET /metrics (Prometheus) and GET /healthz on this address (port 0: any free port, printed on stderr).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Also print the summary line this often (e.g. 10s, 1m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    summary_every: Option<Duration>,
}

impl Cli {
    fn into_options(self) -> anyhow::Result<ReceiveOptions> {
        let source = match (self.http, self.mqtt) {
            (Some(listen), _) => Source::Http(HttpSource {
                listen,
                path: self.path,
            }),
            (None, None) => anyhow::bail!("--mqtt or --http is required"),
            (None, Some((host, port))) => {
                let client = match (self.cert, self.key) {
                    (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
                    _ => None,
                };
                Source::Mqtt(MqttSource {
                    host,
                    port,
                    topic: match &self.share_group {
                        Some(group) => format!("$share/{group}/{}", self.topic),
                        None => self.topic,
                    },
                    client_id: self.client_id,
                    credentials: self
                        .username
                        .map(|user| (user, self.password.unwrap_or_default())),
                    tls: self.tls.then_some(TlsSource {
                        ca_file: self.ca_file,
                        client,
                    }),
                })
            }
        };
        Ok(ReceiveOptions {
            source,
            summary_every: self.summary_every,
            postgres: self.postgres.map(|conninfo| PgOptions {
                conninfo,
                ca_file: self.postgres_ca_file,
                pool_size: usize::from(self.pool_size),
            }),
            metrics: self.metrics,
        })
    }
}

/// An HTTP route: a plain absolute path.
fn parse_route(s: &str) -> Result<String, String> {
    fixgate_cloud::receive::http::check_path(s).map(|()| s.to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fixgate-receive: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let options = cli.into_options()?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new("info"))
        .context("log level (RUST_LOG)")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fixgate-receive")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(fixgate_cloud::receive::run(options));
    // An output thread stuck on a full pipe must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
