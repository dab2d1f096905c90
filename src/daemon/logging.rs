//! Diagnostics: `tracing` to journald when systemd started us with stderr
//! connected to the journal (native protocol: priorities, the target and
//! the event's fields as journal fields), else plain text on stderr.

use std::sync::OnceLock;

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

/// Where diagnostics go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// systemd's journal, over its native socket.
    Journald,
    /// Plain text on stderr (colour only at a terminal).
    Stderr,
}

/// Changes the filter in force, for a SIGHUP that brings a new `log.level`.
static RELOAD: OnceLock<reload::Handle<Targets, Registry>> = OnceLock::new();

/// The filter for a configured level: `RUST_LOG` when set wins.
///
/// `Targets` (levels per module path) rather than `EnvFilter`: it is all
/// `log.level` accepts, and `EnvFilter`'s span and field matching links a
/// regex engine (about 0.3 MB of a 10 MB binary on a Pi) for a syntax the
/// configuration refuses anyway.
fn filter(level: &str) -> Result<Targets, tracing_subscriber::filter::ParseError> {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    directives.parse()
}

/// Whether systemd connected our stderr to the journal: it says so in
/// `JOURNAL_STREAM` (`device:inode` of that stream), and the check that the
/// stream is still our stderr keeps a child that inherited the variable
/// with other output from logging to the journal by mistake.
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The journal's priorities for tracing's levels: syslog's meaning of
/// "notice" is unusual-but-fine, which INFO is not, so INFO is
/// informational (6) and DEBUG and TRACE are debug (7).
fn priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Installs the global subscriber and says where it writes. `level` is a
/// directive list such as `info,fixgate::sources=debug`; `RUST_LOG`
/// overrides it.
pub fn init(level: &str) -> Result<Output, tracing_subscriber::filter::ParseError> {
    let (filter, handle) = reload::Layer::new(filter(level)?);
    let mut journal_error = None;
    let journald = if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => Some(
                layer
                    .with_syslog_identifier("fixgate".to_owned())
                    .with_priority_mappings(priorities()),
            ),
            Err(err) => {
                journal_error = Some(err);
                None
            }
        }
    } else {
        None
    };
    let (output, layer): (Output, Box<dyn Layer<Registry> + Send + Sync>) = match journald {
        Some(journald) => (Output::Journald, Box::new(journald)),
        None => (
            Output::Stderr,
            Box::new(
                tracing_subscriber::fmt::layer()
                    // Colour only for a person at a terminal; files get plain text.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    // stdout is for data (`fixgate nmea`); diagnostics go to stderr.
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .init();
    let _ = RELOAD.set(handle);
    if let Some(err) = journal_error {
        tracing::warn!(
            "JOURNAL_STREAM is set but the journal's socket cannot be used ({err}): logging plain text to stderr"
        );
    }
    Ok(output)
}

/// Puts a new `log.level` in force (on SIGHUP). `RUST_LOG`, when set, still
/// wins, as at start.
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = filter(level).map_err(|e| e.to_string())?;
    match RELOAD.get() {
        Some(handle) => handle.reload(filter).map_err(|e| e.to_string()),
        None => Err("logging is not initialised".to_owned()),
    }
}
