//! The `fixgate` command: the daemon and its tools.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fixgate::config;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { path } => return check_config(&path),
        Command::Nmea { input } => nmea(input.as_deref()),
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
    fixgate::logging::init(&config.log.level).context("log level (log.level or RUST_LOG)")?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %path.display(), "starting");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fixgate")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(fixgate::daemon::run(config, Some(metrics)))
}

fn check_config(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn nmea(input: Option<&Path>) -> anyhow::Result<()> {
    let reader: Box<dyn Read> = match input {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p == Path::new("-") => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        ),
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    fixgate::ingest::nmea::nmea_to_json_lines(reader, &mut out)?;
    out.flush()?;
    Ok(())
}
