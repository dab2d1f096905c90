//! Logs under systemd: with stderr connected to the journal (`JOURNAL_STREAM`
//! naming the stream the daemon's stderr is), the daemon writes journald's
//! native protocol to `/run/systemd/journal/socket` with priorities, and
//! nothing to stderr; a SIGHUP that brings a new `log.level` changes what is
//! logged, and a change that needs a restart is named as such.
//!
//! journald itself cannot run here (systemd is not PID 1), so the test is
//! the journal: it binds the socket in a private mount namespace of the
//! daemon's (`unshare --mount`, which needs root) and reads the datagrams.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, get};

/// One journal entry: its fields, as journald's native protocol sends them
/// (`KEY=value` lines, or `KEY`, a little-endian length and binary data).
fn parse_entry(mut data: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !data.is_empty() {
        let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let line = &data[..line_end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            data = &data[(line_end + 1).min(data.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[line_end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..8 + len];
            fields.insert(key, String::from_utf8_lossy(value).into_owned());
            data = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    fields
}

/// Entries arriving on `journal` until one has a MESSAGE containing `text`.
fn wait_for(
    journal: &UnixDatagram,
    seen: &mut Vec<HashMap<String, String>>,
    text: &str,
    timeout: Duration,
) -> HashMap<String, String> {
    let deadline = Instant::now() + timeout;
    if let Some(e) = seen
        .iter()
        .find(|e| e.get("MESSAGE").is_some_and(|m| m.contains(text)))
    {
        return e.clone();
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no journal entry with {text:?}; got {seen:#?}"));
        journal.set_read_timeout(Some(left)).unwrap();
        let Ok(n) = journal.recv(&mut buf) else {
            continue;
        };
        if n == 0 {
            // The layer's probe at start: an empty datagram.
            continue;
        }
        let entry = parse_entry(&buf[..n]);
        seen.push(entry.clone());
        if entry.get("MESSAGE").is_some_and(|m| m.contains(text)) {
            return entry;
        }
    }
}

fn write_config(path: &Path, store: &Path, port: u16, level: &str, max_clients: u32) {
    std::fs::write(
        path,
        format!(
            "[store]\npath = \"{}\"\n[feed]\nlisten = \"127.0.0.1:{port}\"\nmax_clients = {max_clients}\n[mqtt]\nbroker = \"off\"\n[log]\nlevel = \"{level}\"\n",
            store.display()
        ),
    )
    .unwrap();
}

#[test]
fn under_systemd_logs_go_to_the_journal_with_priorities_and_sighup_changes_the_level() {
    if !Command::new("unshare")
        .args(["--mount", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        println!("SKIPPED: `unshare --mount` is not allowed here (needs root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let journal = UnixDatagram::bind(journal_dir.join("socket")).unwrap();
    let port = free_port();
    let config = dir.path().join("fixgate.toml");
    let store = dir.path().join("store");
    write_config(&config, &store, port, "info", 256);

    // The daemon's stderr, and JOURNAL_STREAM naming it, as systemd sets both.
    let stderr_path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /run/systemd 2>/dev/null || mount -t tmpfs tmpfs /run; \
             mkdir -p /run/systemd/journal && mount --bind \"$0\" /run/systemd/journal && exec \"$@\"",
        ])
        .arg(&journal_dir)
        .arg(env!("CARGO_BIN_EXE_fixgate"))
        .args(["run", "--config"])
        .arg(&config)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();

    let mut seen = Vec::new();
    let running = wait_for(
        &journal,
        &mut seen,
        "fixgate running",
        Duration::from_secs(30),
    );
    assert_eq!(
        running["PRIORITY"], "6",
        "INFO is informational: {running:?}"
    );
    assert_eq!(running["SYSLOG_IDENTIFIER"], "fixgate", "{running:?}");
    assert!(running.contains_key("TARGET"), "{running:?}");
    assert!(get(port, "/healthz").is_ok());

    // SIGHUP with a new level (debug) and a change that needs a restart.
    write_config(&config, &store, port, "debug", 7);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let changed = wait_for(
        &journal,
        &mut seen,
        "log level changed",
        Duration::from_secs(10),
    );
    assert_eq!(changed["PRIORITY"], "6", "{changed:?}");
    let restart = wait_for(
        &journal,
        &mut seen,
        "take effect only after a restart",
        Duration::from_secs(10),
    );
    assert_eq!(restart["PRIORITY"], "4", "WARN is warning: {restart:?}");
    assert_eq!(restart["F_SECTIONS"], "feed", "{restart:?}");
    // Debug events were off at start and are on now: a feed client's
    // arrival logs one.
    assert!(
        !seen.iter().any(|e| e["PRIORITY"] == "7"),
        "debug entries before the level changed: {seen:#?}"
    );
    let mut feed = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    feed.write_all(b"GET /events HTTP/1.1\r\nhost: fixgate\r\n\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 256 * 1024];
    while !seen.iter().any(|e| e["PRIORITY"] == "7") {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no debug entry after the level changed: {seen:#?}"));
        journal.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = journal.recv(&mut buf) {
            if n > 0 {
                seen.push(parse_entry(&buf[..n]));
            }
        }
    }

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // Everything went to the journal; stderr holds no log lines.
    let text = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!text.contains("fixgate running"), "{text}");
    assert!(!text.contains(" INFO "), "{text}");
}
