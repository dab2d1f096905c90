//! Shared parts of the integration tests: the real `fixgate` binary started
//! on a config of the test's own, and a real HTTP/SSE client over a socket.
#![allow(dead_code)]

pub mod browser;
pub mod chrony;
pub mod landing;
pub mod netns;
pub mod nginx;
pub mod postgres;
pub mod proc_stat;
pub mod raw_mqtt;
pub mod receiver;
pub mod talker;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use chrono::{DurationRound, Utc};
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A `fixgate run` process with its own config, store and port.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
}

/// The cloud crate's `fixgate-receive`, built beside this test (a
/// workspace build: `cargo nextest run --workspace`, as scripts/test.sh
/// runs, builds it; so does `cargo build -p fixgate-cloud`).
pub fn receive_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>/fixgate-receive
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("fixgate-receive"))
        .expect("the test's directory");
    assert!(
        bin.exists(),
        "{} is not built: run the tests across the workspace (cargo nextest run --workspace) or cargo build -p fixgate-cloud",
        bin.display()
    );
    bin
}

/// Polls `done` until it holds; fails the test, naming `what`, once
/// `timeout` has passed. Tests wait for the condition they are about to
/// assert instead of sleeping first: a loaded machine then makes a test
/// slower, never wrong, and a quiet one makes it fast.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port (bound and released; fine for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl Daemon {
    /// SIGSTOP: the process holds still (no packet sent, no request
    /// answered) until [`Daemon::resume`].
    pub fn pause(&self) {
        signal(&self.child, nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`Daemon::pause`].
    pub fn resume(&self) {
        signal(&self.child, nix::sys::signal::Signal::SIGCONT);
    }

    /// Writes `extra` (sources etc.) below a `[store]`/`[feed]` header pointing
    /// into `dir`, starts the daemon and waits until `/healthz` answers.
    pub fn start(dir: &Path, extra: &str) -> Daemon {
        Self::start_with(dir, "", extra)
    }

    /// Like [`Daemon::start`], with extra `[feed]` keys (e.g. `keepalive = "1s"`).
    pub fn start_with(dir: &Path, feed_extra: &str, extra: &str) -> Daemon {
        let (config, port) = Self::write_config(dir, feed_extra, extra);
        Self::spawn(dir, config, port)
    }

    /// The config [`Daemon::start_with`] runs on, written into `dir`; its
    /// path and the feed's port.
    pub fn write_config(dir: &Path, feed_extra: &str, extra: &str) -> (PathBuf, u16) {
        let port = free_port();
        let config = dir.join("fixgate.toml");
        // Tests run in parallel: none may take the embedded broker's fixed
        // default port unless it asks for MQTT.
        let mut extra = extra.to_owned();
        if !extra.contains("[mqtt]") {
            extra.push_str("\n[mqtt]\nbroker = \"off\"\n");
        }
        // Recorded logs keep their dates; a test must not start failing a
        // week later because `too_old` drops them once the clock is trusted.
        if !extra.contains("[filter]") {
            extra.push_str("\n[filter]\nmax_age = false\n");
        }
        let text = format!(
            "[store]\npath = \"{store}\"\nflush_interval = \"100ms\"\n\n[feed]\nlisten = \"127.0.0.1:{port}\"\n{feed_extra}\n\n[log]\nlevel = \"debug\"\n\n{extra}\n",
            store = dir.join("store").display(),
        );
        std::fs::write(&config, text).expect("write config");
        (config, port)
    }

    /// Starts the daemon on an existing config file that listens on `port`
    /// and waits until `/healthz` answers.
    pub fn spawn(dir: &Path, config: PathBuf, port: u16) -> Daemon {
        Self::spawn_env(dir, config, port, &[])
    }

    /// [`Daemon::spawn`] with `env` added to the daemon's environment.
    ///
    /// [`free_port`] releases the port it found, so another test's process
    /// may take it before the daemon binds it: then the config gets another
    /// port and the daemon is started again (at most three times).
    pub fn spawn_env(dir: &Path, config: PathBuf, mut port: u16, env: &[(&str, &OsStr)]) -> Daemon {
        for _ in 0..3 {
            let mut daemon = Self::launch(dir, config.clone(), port, env);
            if daemon.wait_healthy_unless_port_taken() {
                return daemon;
            }
            let text = std::fs::read_to_string(&config).expect("read config");
            let again = free_port();
            let text = text.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{again}"));
            std::fs::write(&config, text).expect("write config");
            port = again;
        }
        panic!("the feed's port was taken by another process three times over");
    }

    /// Starts the daemon with `env` added to its environment and returns at
    /// once, for tests that watch it come up (a notify socket's `READY=1`).
    pub fn launch(dir: &Path, config: PathBuf, port: u16, env: &[(&str, &OsStr)]) -> Daemon {
        // One log per start: a test that restarts the daemon keeps them all.
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("daemon-{port}-{n}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_fixgate"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,fixgate=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start fixgate");
        Daemon {
            child,
            port,
            dir: dir.to_owned(),
            config,
            log,
        }
    }

    fn wait_healthy(&mut self) {
        assert!(
            self.wait_healthy_unless_port_taken(),
            "fixgate could not bind its port:\n{}",
            self.log_text()
        );
    }

    /// Waits until `/healthz` answers (true), or the daemon exited because
    /// its feed port was already taken (false); any other end panics.
    fn wait_healthy_unless_port_taken(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log_text();
                let taken = format!(
                    "cannot listen on 127.0.0.1:{}: Address already in use",
                    self.port
                );
                if log.contains(&taken) {
                    return false;
                }
                panic!("fixgate exited early ({status}):\n{log}");
            }
            if get(self.port, "/healthz").is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("fixgate never became healthy:\n{}", self.log_text());
    }

    /// Where the daemon logs.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        signal(&self.child, nix::sys::signal::Signal::SIGTERM);
        let status = wait_timeout(&mut self.child, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("fixgate ignored SIGTERM:\n{}", self.log_text()));
        std::mem::forget(self);
        status
    }

    /// Sends SIGTERM and returns at once (see [`Daemon::wait_exit`]).
    pub fn sigterm(&self) {
        signal(&self.child, nix::sys::signal::Signal::SIGTERM);
    }

    /// Whether the process is still running.
    pub fn child_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit on its own; its exit status.
    pub fn wait_exit(mut self, timeout: Duration) -> ExitStatus {
        let status = wait_timeout(&mut self.child, timeout)
            .unwrap_or_else(|| panic!("fixgate did not exit:\n{}", self.log_text()));
        std::mem::forget(self);
        status
    }

    /// Kills the process at once (a power cut, as far as the store can tell).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    /// The `seq` of `/api/devices` (the head).
    pub fn head(&self) -> u64 {
        let body = get(self.port, "/api/devices").expect("/api/devices");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["seq"].as_u64().expect("seq")
    }

    /// The sequence number just before the oldest stored record, waiting for
    /// a first record: what a client that wants everything passes as its
    /// Last-Event-ID. (Asked of the feed, whose reset names the oldest.)
    pub fn base(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let client = SseClient::connect(self.port, "", Some("0"));
            if let Some(reset) = client.next_event(Duration::from_secs(5)) {
                if let Some(oldest) = reset.json()["oldest"].as_u64() {
                    return oldest - 1;
                }
            }
            assert!(Instant::now() < deadline, "the store stayed empty");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the head reaches `seq`.
    pub fn wait_head(&self, seq: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let head = self.head();
            if head >= seq || Instant::now() > deadline {
                return head;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resident memory of the daemon in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.memory_kib().0
    }

    /// Resident memory now and at its peak (`VmRSS`, `VmHWM`), in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.child.id())
    }

    /// Waits until metric `name` over the series with `labels` reaches
    /// `want`; returns what it reached (the caller asserts).
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) -> Option<f64> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.metric_with(name, labels);
            if got.is_some_and(|v| v >= want) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sum of metric `name` over all its series; `None` when it has none.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metric_with(name, &[])
    }

    /// The sum of metric `name` over the series carrying every one of
    /// `labels`; `None` when no such series exists.
    pub fn metric_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_at(self.port, name, labels)
    }
}

/// The sum of metric `name` over the series carrying every one of `labels`
/// on the `/metrics` of the daemon whose feed is on `port`; `None` when no
/// such series exists (or the daemon does not answer).
pub fn metric_at(port: u16, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = get(port, "/metrics").unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// What a scrape of `/metrics` shows of the series labelled by device.
#[derive(Debug, Clone, Copy)]
pub struct Scrape {
    /// Bytes of the whole page.
    pub bytes: usize,
    /// Series (sample lines) in all.
    pub series: usize,
    /// Series with a `device` label.
    pub device_series: usize,
    /// How long the scrape took.
    pub took: Duration,
}

/// Scrapes `/metrics` of the daemon whose feed is on `port`.
pub fn scrape(port: u16) -> Scrape {
    let started = Instant::now();
    let text = get(port, "/metrics").expect("/metrics");
    let took = started.elapsed();
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    Scrape {
        bytes: text.len(),
        series: samples.len(),
        device_series: samples.iter().filter(|l| l.contains("device=\"")).count(),
        took,
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB (0 when unreadable).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One `key=value` of `fixgate simulate`'s summary line.
pub fn summary_field(summary: &str, key: &str) -> f64 {
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {summary:?}"))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A daemon with the embedded broker on a port of its own; `extra` may add
/// `[mqtt]` keys (after the header) and further sections.
pub fn start_with_broker(dir: &Path, mqtt_extra: &str, extra: &str) -> (Daemon, u16) {
    let mqtt = free_port();
    let daemon = Daemon::start(
        dir,
        &format!(
            "[mqtt]\nbroker = \"embedded\"\nlisten = \"127.0.0.1:{mqtt}\"\n{mqtt_extra}\n{extra}"
        ),
    );
    wait_port(mqtt);
    (daemon, mqtt)
}

/// Waits until something accepts connections on `port`.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `mosquitto_pub`, Debian's real MQTT client: one message at QoS 1.
/// Returns whether the client reported success.
pub fn mosquitto_pub(port: u16, topic: &str, payload: &[u8], auth: Option<(&str, &str)>) -> bool {
    mosquitto_pub_args(port, topic, payload, auth, &[])
}

/// [`mosquitto_pub`], returning whether it succeeded and what it printed
/// on stderr (its refusals: "Connection Refused: not authorised.").
pub fn mosquitto_pub_output(
    port: u16,
    topic: &str,
    payload: &[u8],
    auth: Option<(&str, &str)>,
    extra: &[&str],
) -> (bool, String) {
    let mut cmd = mosquitto_pub_command(port, topic, extra);
    cmd.arg("-s");
    if let Some((user, pass)) = auth {
        cmd.args(["-u", user, "-P", pass]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt install mosquitto-clients)");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(payload);
    }
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut err) = stderr {
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
        }
        text
    });
    let ok = wait_timeout(&mut child, Duration::from_secs(10)).is_some_and(|s| s.success());
    let _ = child.kill();
    let _ = child.wait();
    (ok, reader.join().unwrap_or_default())
}

/// [`mosquitto_pub`] with extra arguments (e.g. `--cafile`).
pub fn mosquitto_pub_args(
    port: u16,
    topic: &str,
    payload: &[u8],
    auth: Option<(&str, &str)>,
    extra: &[&str],
) -> bool {
    let mut cmd = mosquitto_pub_command(port, topic, extra);
    cmd.arg("-s");
    if let Some((user, pass)) = auth {
        cmd.args(["-u", user, "-P", pass]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_pub (apt install mosquitto-clients)");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(payload);
    }
    wait_timeout(&mut child, Duration::from_secs(10)).is_some_and(|s| s.success())
}

/// `mosquitto_pub` at QoS 1 to `topic` on `port` with `extra` arguments;
/// the message (`-s`, `-f FILE`, `-m TEXT`) is the caller's to add.
pub fn mosquitto_pub_command(port: u16, topic: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(extra);
    cmd.args([
        "-h",
        "localhost",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
    ]);
    cmd
}

/// `mosquitto_sub`, Debian's real MQTT subscriber, printing `topic payload`
/// lines (`-v`) as they come; killed on drop.
pub struct MosquittoSub {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl MosquittoSub {
    /// Subscribes to `filters` on the broker at `port`, logged in as `auth`
    /// if given, with `extra` arguments (`-C 2` to leave after two messages).
    pub fn start(
        port: u16,
        filters: &[&str],
        auth: Option<(&str, &str)>,
        extra: &[&str],
    ) -> MosquittoSub {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "localhost", "-p", &port.to_string(), "-v"]);
        for filter in filters {
            cmd.args(["-t", filter]);
        }
        if let Some((user, pass)) = auth {
            cmd.args(["-u", user, "-P", pass]);
        }
        cmd.args(extra);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (apt install mosquitto-clients)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        MosquittoSub {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next line printed within `timeout`.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for the client to leave by itself; its exit status and what
    /// it printed on stderr (`None` if it was still running after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, String)> {
        let status = wait_timeout(&mut self.child, timeout)?;
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        Some((status, stderr))
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's mosquitto broker on a port of its own, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
}

impl Mosquitto {
    /// The broker's process id (for `/proc/<pid>/stat` and `status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts mosquitto (anonymous access, loopback only) and waits for it.
    pub fn start(dir: &Path) -> Mosquitto {
        Self::start_with(dir, "")
    }

    /// Starts mosquitto with a TLS listener whose certificate, for
    /// `localhost`, is signed by a fresh CA; returns the CA's PEM path.
    pub fn start_tls(dir: &Path) -> (Mosquitto, PathBuf) {
        let ca = make_tls_files(dir);
        let d = dir.display();
        let tls = format!(
            "cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\ntls_version tlsv1.2\n"
        );
        (Self::start_with(dir, &tls), ca)
    }

    fn start_with(dir: &Path, listener_extra: &str) -> Mosquitto {
        let port = free_port();
        Self::start_on(
            dir,
            port,
            &format!("listener {port} 127.0.0.1\n{listener_extra}persistence false\n"),
        )
    }

    /// Starts mosquitto on `port` with persistence on: the sessions of
    /// clients that connect with clean_session=false, their plain
    /// subscriptions and the messages queued or in flight for them survive
    /// a restart (saved every second and at a clean stop), as in
    /// production. Shared subscriptions (`$share/...`) do not: mosquitto
    /// 2.0.11 does not save them, and its sessions come back without them.
    pub fn start_persistent(dir: &Path, port: u16) -> Mosquitto {
        let db = dir.join(format!("mosquitto-db-{port}"));
        std::fs::create_dir_all(&db).expect("mosquitto db dir");
        Self::start_on(
            dir,
            port,
            &format!(
                "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\nmax_inflight_messages 20\n",
                db.display()
            ),
        )
    }

    /// Stops the broker cleanly (SIGTERM: it saves its persistence file)
    /// and waits for it to exit.
    pub fn terminate(mut self) {
        signal(&self.child, nix::sys::signal::Signal::SIGTERM);
        let stopped = wait_timeout(&mut self.child, Duration::from_secs(20));
        assert!(stopped.is_some(), "mosquitto ignored SIGTERM");
    }

    /// Starts mosquitto on `port` with `conf` (listeners and options; anonymous
    /// access and running as root are added) and waits for `port`.
    pub fn start_on(dir: &Path, port: u16, conf: &str) -> Mosquitto {
        let path = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &path,
            format!(
                "{conf}allow_anonymous true\n# As root, mosquitto would switch to its own user, who cannot read\n# the test's private directory.\nuser root\n"
            ),
        )
        .expect("mosquitto.conf");
        let conf = path;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt install mosquitto)");
        wait_port(port);
        Mosquitto { child, port }
    }
}

/// Runs `openssl args` in `dir`, asserting success.
fn openssl(dir: &Path, args: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && openssl {args}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args}");
}

/// A client certificate for `name`, signed by the CA that
/// [`make_tls_files`] made in `dir`; returns the certificate and key paths.
pub fn make_client_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &format!("req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}"),
    );
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )
    .expect("client.ext");
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile client.ext"
        ),
    );
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// A CA and a `localhost` server certificate it signed, made with openssl.
pub fn make_tls_files(dir: &Path) -> PathBuf {
    let run = |args: &str| openssl(dir, args);
    run(
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=fixgate-test-ca",
    );
    run("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost");
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("san.ext");
    run(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext",
    );
    dir.join("ca.pem")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that gives up after `timeout` and hands every status back
/// as a response.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// `GET` a path on the daemon; the body as text, or the error.
pub fn get(port: u16, path: &str) -> Result<String, String> {
    let mut response = http_agent(Duration::from_secs(5))
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// One parsed Server-Sent Event (or a comment line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sse {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
    pub comment: Option<String>,
}

impl Sse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("bad data {:?}: {e}", self.data))
    }

    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|i| i.parse().ok())
            .expect("numeric id")
    }
}

/// A live `/events` connection read on a thread of its own.
pub struct SseClient {
    pub headers: Vec<(String, String)>,
    pub status: u16,
    events: mpsc::Receiver<Sse>,
}

impl SseClient {
    /// Connects to `/events{query}` with an optional `Last-Event-ID` header.
    pub fn connect(port: u16, query: &str, last_event_id: Option<&str>) -> SseClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent.get(format!("http://127.0.0.1:{port}/events{query}"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.call().expect("connect /events");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let (tx, events) = mpsc::channel();
        let reader = response.into_body().into_reader();
        std::thread::spawn(move || parse_stream(BufReader::new(reader), tx));
        SseClient {
            headers,
            status,
            events,
        }
    }

    /// Waits for the stream's first block, the `retry:` hint: the feed
    /// sends it once it has placed this client's cursor, so what is stored
    /// from now on reaches it.
    pub fn ready(self) -> SseClient {
        let first = self
            .next(Duration::from_secs(10))
            .expect("the feed's first block");
        assert!(first.retry.is_some(), "not the retry hint: {first:?}");
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next event or comment, waiting up to `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Sse> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The next real event (comments and retry-only blocks skipped).
    pub fn next_event(&self, timeout: Duration) -> Option<Sse> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.next(left)?;
            if e.event.is_some() || e.id.is_some() || !e.data.is_empty() {
                return Some(e);
            }
        }
    }

    /// Collects `n` events named `kind`, failing the test after `timeout`.
    pub fn take(&self, kind: &str, n: usize, timeout: Duration) -> Vec<Sse> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("only {} of {n} {kind} events arrived", out.len()));
            match self.next_event(left) {
                Some(e) if e.event.as_deref() == Some(kind) => out.push(e),
                Some(_) => {}
                None => panic!("only {} of {n} {kind} events arrived", out.len()),
            }
        }
        out
    }
}

fn parse_stream(reader: impl BufRead, tx: mpsc::Sender<Sse>) {
    let mut current = Sse::default();
    let mut dirty = false;
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.is_empty() {
            if dirty && tx.send(std::mem::take(&mut current)).is_err() {
                return;
            }
            dirty = false;
            continue;
        }
        dirty = true;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "" => current.comment = Some(value.to_owned()),
            "id" => current.id = Some(value.to_owned()),
            "event" => current.event = Some(value.to_owned()),
            "retry" => current.retry = value.parse().ok(),
            "data" => {
                if !current.data.is_empty() {
                    current.data.push('\n');
                }
                current.data.push_str(value);
            }
            _ => {}
        }
    }
}

/// NMEA text for `epochs` 1 Hz epochs of one simulated vehicle, starting at `start`.
pub fn simulated_nmea(epochs: usize, start: chrono::DateTime<chrono::Utc>, seed: u64) -> String {
    let mut fleet = fixgate::sim::Fleet::new(1, (52.0907, 5.1214), seed);
    let mut text = String::new();
    for i in 0..epochs {
        let t = start + chrono::Duration::seconds(i as i64);
        for fix in fleet.step(1.0, t) {
            fixgate::sim::nmea::write_epoch(&fix, &mut text);
        }
    }
    text
}

/// `total` position events of `vehicles` simulated vehicles (`bus-1`…) at
/// 1 Hz, interleaved as a gateway stores them, from 2026-11-23T06:00:00Z.
pub fn fleet_events(vehicles: usize, total: usize) -> Vec<fixgate::fix::Event> {
    use fixgate::fix::{DeviceId, Event, Position};
    let mut fleet = fixgate::sim::Fleet::new(vehicles, (52.0907, 5.1214), 42);
    let ids: Vec<DeviceId> = (1..=vehicles)
        .map(|i| DeviceId::new(&format!("bus-{i}")).expect("id"))
        .collect();
    let start = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 11, 23, 6, 0, 0)
        .single()
        .expect("time");
    let mut events = Vec::with_capacity(total);
    let mut t = 0i64;
    while events.len() < total {
        let time = start + chrono::Duration::seconds(t);
        for (fix, device) in fleet.step(1.0, time).into_iter().zip(&ids) {
            events.push(Event::Position(Position::new(device.clone(), fix)));
        }
        t += 1;
    }
    events.truncate(total);
    events
}

/// The receiver's end of a pty, and the symlink the daemon knows it by.
pub struct PtyReceiver {
    master: File,
    // Held so the slave's raw settings stay until the daemon has opened it.
    _slave: OwnedFd,
    link: PathBuf,
    name: PathBuf,
}

impl PtyReceiver {
    /// Plugs a new receiver in behind `link`.
    pub fn plug(link: &Path) -> PtyReceiver {
        // Close-on-exec from the start: tests run in parallel and spawn
        // daemons, and a child forked before a later fcntl would keep our
        // master open for its whole life, so dropping ours would unplug nothing.
        let master =
            posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).expect("posix_openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = PathBuf::from(ptsname_r(&master).expect("ptsname"));
        let slave: OwnedFd = nix::fcntl::open(
            &name,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open pty slave");
        // Raw before the daemon opens it: a cooked slave would echo what we
        // write back into the master until its buffer fills and writes block.
        let mut termios = tcgetattr(&slave).expect("tcgetattr");
        cfmakeraw(&mut termios);
        tcsetattr(&slave, SetArg::TCSANOW, &termios).expect("tcsetattr");
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&name, link).expect("symlink");
        PtyReceiver {
            master: File::from(OwnedFd::from(master)),
            _slave: slave,
            link: link.to_owned(),
            name,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to pty master");
    }

    /// The line speed the daemon last set on its end, in bits per second:
    /// termios ioctls on a pty's master act on the slave (checked on
    /// Linux). TCGETS2, since serialport sets a rate as a number (BOTHER),
    /// which the older TCGETS does not show.
    pub fn line_speed(&self) -> u32 {
        use std::os::fd::AsRawFd;
        // SAFETY: termios2 is plain integers, all-zero valid; the ioctl
        // fills it from an fd this receiver owns.
        let mut termios: libc::termios2 = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TCGETS2, &mut termios) };
        assert_eq!(
            rc,
            0,
            "TCGETS2 on the pty master: {}",
            std::io::Error::last_os_error()
        );
        termios.c_ospeed
    }

    /// `n` 1 Hz epochs of a simulated receiver starting now.
    pub fn send_epochs(&mut self, n: usize, seed: u64, offset_s: i64) -> String {
        let start = Utc::now()
            .duration_trunc(chrono::Duration::seconds(1))
            .unwrap()
            + chrono::Duration::seconds(offset_s);
        let text = simulated_nmea(n, start, seed);
        self.send(text.as_bytes());
        text
    }
}

impl Drop for PtyReceiver {
    /// Unplugging takes the name away, as udev does for a USB receiver. Left
    /// in place, the link would point at a freed /dev/pts index that another
    /// test's pty may take, and the daemon would "reopen" someone else's port.
    fn drop(&mut self) {
        if std::fs::read_link(&self.link).is_ok_and(|target| target == self.name) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

/// Bytes a directory occupies: allocated blocks, not apparent lengths, as
/// `du` counts them (what an SD card or a tmpfs loses).
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The machine a benchmark ran on: architecture, CPU model, cores.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!(
        "{} {}, {} cores",
        std::env::consts::ARCH,
        cpu,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}
