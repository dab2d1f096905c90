//! `fixgate-receive` (the cloud crate's receiver) run as a child process, for tests and benches that
//! check what arrived upstream.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, wait_port};

/// `fixgate-receive` as a child process; its stdout lines collected as JSON.
pub struct Receiver {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: PathBuf,
}

impl Receiver {
    pub fn mqtt(dir: &Path, port: u16, client_id: &str) -> Receiver {
        let addr = format!("127.0.0.1:{port}");
        Self::spawn(
            dir,
            &[
                "--mqtt",
                &addr,
                "--topic",
                "fixgate/+/batches",
                "--client-id",
                client_id,
            ],
        )
    }

    pub fn http(dir: &Path, port: u16) -> Receiver {
        let addr = format!("127.0.0.1:{port}");
        let receiver = Self::spawn(dir, &["--http", &addr, "--path", "/batches"]);
        wait_port(port);
        receiver
    }

    pub fn spawn(dir: &Path, args: &[&str]) -> Receiver {
        let stderr = dir.join(format!("receive-{}.log", free_port()));
        let mut child = Command::new(super::receive_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("receive log"))
            .spawn()
            .expect("start fixgate-receive");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("receive printed {line:?}: {e}"));
                sink.lock().unwrap().push(value);
            }
        });
        Receiver {
            child,
            lines,
            stderr,
        }
    }

    pub fn records(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// How many lines it printed so far.
    pub fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits until `done` holds for what arrived (or `timeout` passes); returns it.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.records();
            if done(&records) || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it with SIGTERM; returns what it printed on stderr.
    pub fn stop(mut self) -> String {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
