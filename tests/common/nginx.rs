//! Debian's nginx as an HTTP load balancer in front of several backends,
//! on a config of the test's own, run in the foreground (`daemon off`) and
//! stopped with its workers on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, wait_port};

/// nginx balancing `/` round robin over a set of loopback backends.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub port: u16,
    log: PathBuf,
}

impl Nginx {
    /// Starts nginx on a free port with an upstream of `backends` (round
    /// robin, nginx's default) and waits until it and a worker are up. A
    /// backend that refuses the connection or answers 502/503 is skipped
    /// for the next one; request bodies up to 64 MiB are passed on.
    pub fn round_robin(dir: &Path, backends: &[u16]) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed (apt install nginx)");
        let port = free_port();
        let d = dir.join("nginx");
        std::fs::create_dir_all(&d).expect("nginx dir");
        let d = d.display();
        let servers: String = backends
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} max_fails=0;\n"))
            .collect();
        // Workers as root: the test's temp dir is root's alone.
        let conf = format!(
            "user root;\n\
             worker_processes 1;\n\
             error_log {d}/error.log info;\n\
             pid {d}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20 access_log {d}/access.log;\n\
             \x20 client_body_temp_path {d}/client_body;\n\
             \x20 proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fastcgi;\n\
             \x20 uwsgi_temp_path {d}/uwsgi;\n\
             \x20 scgi_temp_path {d}/scgi;\n\
             \x20 upstream receivers {{\n{servers}  }}\n\
             \x20 server {{\n\
             \x20   listen 127.0.0.1:{port};\n\
             \x20   client_max_body_size 64m;\n\
             \x20   location / {{\n\
             \x20     proxy_pass http://receivers;\n\
             \x20     proxy_http_version 1.1;\n\
             \x20     proxy_set_header Connection \"\";\n\
             \x20     proxy_next_upstream error timeout http_502 http_503;\n\
             \x20     proxy_connect_timeout 2s;\n\
             \x20     proxy_read_timeout 30s;\n\
             \x20   }}\n\
             \x20 }}\n\
             }}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let log = dir.join("nginx.stderr");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("nginx log"))
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while children_of(nginx.child.id()).is_empty() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", nginx.log_text());
            }
            assert!(Instant::now() < deadline, "nginx started no worker");
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_port(port);
        nginx
    }

    /// What nginx wrote on stderr and in its error log.
    pub fn log_text(&self) -> String {
        let error_log = self.log.with_file_name("nginx").join("error.log");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(error_log).unwrap_or_default()
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let master = self.child.id();
        let workers = children_of(master);
        // SIGTERM: fast shutdown, the master takes its workers along.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(master as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in workers {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The processes whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| parent_of(candidate) == Some(pid))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, then the parent's pid.
    stat.get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
