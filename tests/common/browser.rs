//! Debian's Chromium, headless, driven through `playwright-core` by
//! `tests/browser/bridge.mjs`: one JSON command per line on the bridge's
//! stdin, one JSON answer per line on its stdout.
//!
//! The peers are Debian's `chromium` (`/usr/bin/chromium`, or
//! `$FIXGATE_CHROMIUM`), `node`, and `playwright-core` installed by `npm ci`
//! in `tests/browser` (scripts/test.sh does all three). In CI a missing
//! peer fails the test; elsewhere the test says SKIPPED and passes.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where the bridge and its `node_modules` live.
pub fn bridge_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The Chromium the bridge starts.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("FIXGATE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What is missing to drive a browser, if anything.
pub fn missing_peer() -> Option<String> {
    if !chromium_path().exists() {
        return Some(format!(
            "{} not found (apt-get install chromium)",
            chromium_path().display()
        ));
    }
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node not found (apt-get install nodejs npm)".into());
    }
    if !bridge_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Some("playwright-core not installed (npm ci --prefix tests/browser)".into());
    }
    None
}

/// A headless Chromium behind the bridge; ended on drop.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    /// The origin pages are opened on (`http://127.0.0.1:<port>`).
    pub origin: String,
}

impl Browser {
    /// Starts the bridge for pages of the daemon on `port`. `None`, after
    /// printing why, when a peer is missing outside CI; in CI (`CI` set) a
    /// missing peer is a failure, so that a broken install cannot pass as
    /// a skipped test.
    pub fn start(port: u16) -> Option<Browser> {
        if let Some(missing) = missing_peer() {
            if std::env::var_os("CI").is_some() {
                panic!("the browser tests cannot run: {missing} (scripts/test.sh installs it)");
            }
            println!("SKIPPED: {missing} (scripts/test.sh installs it)");
            return None;
        }
        let mut child = Command::new("node")
            .arg("bridge.mjs")
            .current_dir(bridge_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node bridge.mjs");
        let stdin = child.stdin.take().expect("bridge stdin");
        let stdout = child.stdout.take().expect("bridge stdout");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Some(Browser {
            child,
            stdin,
            answers,
            origin: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Sends one command and waits up to `timeout` for its answer.
    pub fn try_cmd(&mut self, command: Value, timeout: Duration) -> Result<Value, String> {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("bridge gone: {e}"))?;
        let answer = self
            .answers
            .recv_timeout(timeout)
            .map_err(|_| format!("no answer to {command} within {timeout:?}"))?;
        let answer: Value =
            serde_json::from_str(&answer).map_err(|e| format!("bad answer {answer:?}: {e}"))?;
        if answer["ok"] == true {
            Ok(answer["result"].clone())
        } else {
            Err(answer["error"].as_str().unwrap_or("?").to_owned())
        }
    }

    /// [`Browser::try_cmd`] that fails the test on an error.
    pub fn cmd(&mut self, command: Value) -> Value {
        self.try_cmd(command.clone(), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{command}: {e}"))
    }

    /// Launches Chromium with a fresh profile and loads `path` of the origin
    /// in a `width`×`height` viewport.
    pub fn open(&mut self, path: &str, width: u32, height: u32) -> Value {
        let url = format!("{}{path}", self.origin);
        self.cmd(json!({"cmd": "open", "url": url, "width": width, "height": height}))
    }

    /// The value of a JS expression in the page.
    pub fn eval(&mut self, expr: &str) -> Value {
        self.cmd(json!({"cmd": "eval", "expr": expr}))
    }

    /// Waits until a JS expression is truthy; how long that took, or why not.
    pub fn wait(&mut self, expr: &str, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        self.try_cmd(
            json!({"cmd": "wait", "expr": expr, "timeout": timeout.as_millis() as u64}),
            timeout + Duration::from_secs(10),
        )
        .map(|_| started.elapsed())
    }

    /// [`Browser::wait`] that fails the test, with the page's state, on a timeout.
    pub fn must(&mut self, expr: &str, timeout: Duration) -> Duration {
        match self.wait(expr, timeout) {
            Ok(took) => took,
            Err(e) => {
                let state = self.dataset();
                panic!("waited {timeout:?} for `{expr}`: {e}\npage state: {state}")
            }
        }
    }

    /// `document.body.dataset` as an object.
    pub fn dataset(&mut self) -> Value {
        self.try_cmd(
            json!({"cmd": "eval", "expr": "({...document.body.dataset})"}),
            Duration::from_secs(10),
        )
        .unwrap_or(Value::Null)
    }

    /// One `data-*` attribute of <body> as a number (0 when absent).
    pub fn number(&mut self, key: &str) -> f64 {
        let v = self.eval(&format!("Number(document.body.dataset.{key} || 0)"));
        v.as_f64().unwrap_or(0.0)
    }

    /// Every request the browser made since it started (or `clear_network`).
    pub fn network(&mut self) -> Vec<Value> {
        self.cmd(json!({"cmd": "network"}))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Saves a PNG of the viewport.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        self.cmd(json!({"cmd": "screenshot", "path": path}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.try_cmd(json!({"cmd": "close"}), Duration::from_secs(10));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where tests and benches leave screenshots: `target/depot-screen/`.
pub fn artifacts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/depot-screen")
}
