//! `fixgate-receive --postgres`: the cloud receiver landing batches in
//! PostgreSQL, as a child process that a test may SIGKILL and start again
//! on the same ports, client id and database.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, http_agent, metric_at, wait_port};

/// One receiver; restarts keep its arguments (and so its ports).
pub struct Landing {
    child: Option<Child>,
    args: Vec<String>,
    dir: PathBuf,
    name: String,
    starts: usize,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_port: u16,
    /// Where batches are POSTed (HTTP receivers only).
    pub http_port: Option<u16>,
}

impl Landing {
    /// Subscribed to the broker on `broker` in share group `group` under
    /// `client_id`; returns once it subscribed and the database answered.
    pub fn mqtt(dir: &Path, broker: u16, group: &str, client_id: &str, conninfo: &str) -> Landing {
        let args = [
            "--mqtt",
            &format!("127.0.0.1:{broker}"),
            "--share-group",
            group,
            "--client-id",
            client_id,
            "--postgres",
            conninfo,
        ];
        Self::start(dir, client_id, &args, None)
    }

    /// Taking POSTs on a port of its own; returns once it listens and the
    /// database answered.
    pub fn http(dir: &Path, name: &str, conninfo: &str) -> Landing {
        let port = free_port();
        let args = [
            "--http",
            &format!("127.0.0.1:{port}"),
            "--path",
            "/batches",
            "--postgres",
            conninfo,
        ];
        Self::start(dir, name, &args, Some(port))
    }

    fn start(dir: &Path, name: &str, args: &[&str], http_port: Option<u16>) -> Landing {
        let metrics_port = free_port();
        let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        args.extend(["--metrics".to_owned(), format!("127.0.0.1:{metrics_port}")]);
        let mut landing = Landing {
            child: None,
            args,
            dir: dir.to_owned(),
            name: name.to_owned(),
            starts: 0,
            metrics_port,
            http_port,
        };
        landing.restart();
        landing
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.join(format!("{}-{start}.log", self.name))
    }

    /// What the current process wrote on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    /// Every start's stderr, for a failure message.
    pub fn all_logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                format!(
                    "--- {} start {n} ---\n{}",
                    self.name,
                    std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The JSON lines on the current process's stderr with `key` at the top.
    pub fn events(&self, key: &str) -> Vec<Value> {
        self.log()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get(key).is_some())
            .collect()
    }

    /// How often the current process has subscribed (once per connection).
    pub fn subscriptions(&self) -> usize {
        self.events("subscribed").len()
    }

    /// Starts the process (again) with the same arguments and waits until
    /// it serves its metrics, answers healthy (the database is there) and,
    /// for an MQTT receiver, has subscribed.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).expect("receiver log");
        let child = Command::new(super::receive_bin())
            .args(&self.args)
            // FIXGATE_TEST_RECEIVE_LOG (e.g. `debug`) to see more when a
            // run fails.
            .env(
                "RUST_LOG",
                std::env::var("FIXGATE_TEST_RECEIVE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start fixgate-receive");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{} exited at start ({status}):\n{}", self.name, self.log());
            }
            let subscribed = self.http_port.is_some() || !self.events("subscribed").is_empty();
            if subscribed && self.healthz() == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready (subscribed: {subscribed}, healthz: {:?}):\n{}",
                self.name,
                self.healthz(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(port) = self.http_port {
            wait_port(port);
        }
    }

    /// SIGKILL: no goodbye, nothing flushed, transactions cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The status of `GET /healthz`; `None` when nothing answers.
    pub fn healthz(&self) -> Option<u16> {
        http_agent(Duration::from_secs(2))
            .get(format!("http://127.0.0.1:{}/healthz", self.metrics_port))
            .call()
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// The sum of metric `name` over its series with `labels` (`None`:
    /// no such series, or the process does not answer).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_at(self.metrics_port, name, labels)
    }

    /// Batches with `result` (landed, duplicate, refused, failed) so far
    /// in this process (0 before the first).
    pub fn batches(&self, result: &str) -> f64 {
        self.metric("fixgate_receive_batches_total", &[("result", result)])
            .unwrap_or(0.0)
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.kill();
    }
}
