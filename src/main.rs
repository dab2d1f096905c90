//! The `fixgate` command: the daemon and its tools.

mod cli;

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use cli::{Cli, Command, SimulateArgs};
use fixgate::config;

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
    fixgate::telemetry::describe();
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
