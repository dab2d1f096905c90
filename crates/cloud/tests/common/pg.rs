//! A throwaway PostgreSQL 15 (+ PostGIS when installed) cluster of the test's
//! own, for tests that land batches in a real database.
//!
//! API:
//! - `Pg::start()` -> `Pg`: `initdb -A trust` in a fresh temp directory,
//!   starts the server on a Unix socket only (no TCP; `fsync=off`) and
//!   creates the database `fixgate`. Panics, saying what is missing, when the
//!   PostgreSQL binaries are not installed.
//! - `pg.conninfo()` -> `String`: what `--postgres` takes,
//!   `host=<socket dir> port=<port> user=postgres dbname=fixgate`.
//! - `pg.stop()` / `pg.start_again()`: stop the server (fast shutdown:
//!   connections are cut) and start it again on the same socket and data.
//! - `pg.psql(sql)` -> `String`: runs SQL with `psql -XAtq` (unaligned, tuples
//!   only, `|` between columns, one row per line), panics on error.
//! - `pg.client().await` -> `tokio_postgres::Client` (its connection task
//!   spawned on the current runtime).
//! - Dropping the `Pg` stops the server (immediate) and removes the directory.
//!
//! Binaries: `$FIXGATE_PG_BIN` if set, else `/usr/lib/postgresql/15/bin`
//! (Debian's `postgresql-15`; PostGIS is `postgresql-15-postgis-3`). Run as
//! root (CI), the server runs as the `postgres` user via `runuser` and the
//! directory is chowned to it; otherwise as the current user.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One running (or stopped) test cluster.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Serving TLS on TCP 127.0.0.1 too (see `enable_tls`).
    tls: bool,
}

impl Pg {
    /// A new cluster with the database `fixgate`, started.
    pub fn start() -> Pg {
        let bin = std::env::var_os("FIXGATE_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        assert!(
            bin.join("initdb").exists(),
            "PostgreSQL is not installed: no {} (apt-get install postgresql-15 postgresql-15-postgis-3, or set FIXGATE_PG_BIN)",
            bin.join("initdb").display()
        );
        let dir = tempfile::Builder::new()
            .prefix("fixgate-pg")
            .tempdir()
            .expect("a temp dir");
        let as_postgres = is_root();
        std::fs::create_dir(dir.path().join("sock")).expect("the socket dir");
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(dir.path()));
        }
        let pg = Pg {
            dir,
            bin,
            // Only names the socket file: every cluster has its own dir.
            port: 5432,
            as_postgres,
            tls: false,
        };
        let data = pg.data();
        pg.run_pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        pg.start_again();
        pg.run_pg(
            "createdb",
            &[
                "-h",
                pg.socket_dir().to_str().unwrap(),
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "fixgate",
            ],
        );
        pg
    }

    /// The directory of the server's socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The port (it names the socket file; no TCP).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The connection string for `--postgres` and tokio-postgres.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=fixgate",
            self.socket_dir().display(),
            self.port
        )
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let mut options = format!(
            "-k {} -p {} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.socket_dir().display(),
            self.port
        );
        if self.tls {
            // Later options win: TCP on loopback, with the files
            // `enable_tls` put in the data directory.
            options += " -c listen_addresses='127.0.0.1' -c ssl=on \
                        -c ssl_cert_file=server.crt -c ssl_key_file=server.key";
        }
        let log = self.dir.path().join("server.log");
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Restarts the server serving TLS with `cert` and `key` (PEM) on TCP
    /// 127.0.0.1 as well as the Unix socket, on a free port (which also
    /// names the socket from then on); returns that port.
    pub fn enable_tls(&mut self, cert: &str, key: &str) -> u16 {
        self.stop();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        for (name, text) in [("server.crt", cert), ("server.key", key)] {
            let path = self.data().join(name);
            std::fs::write(&path, text).expect("write a TLS file");
            run(Command::new("chmod").arg("600").arg(&path));
            if self.as_postgres {
                run(Command::new("chown").arg("postgres:").arg(&path));
            }
        }
        self.port = port;
        self.tls = true;
        self.start_again();
        port
    }

    /// Stops the server (fast: open connections are cut), waiting for it.
    pub fn stop(&self) {
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    /// Runs `sql` with psql; its rows, `|` between columns.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.run_pg(
            "psql",
            &[
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir().to_str().unwrap(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "fixgate",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// A client connection to `fixgate`.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.conninfo(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(connection);
        client
    }

    fn run_pg(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir(self.dir.path());
        run(&mut command)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.try_run_pg_stop(&data);
    }
}

impl Pg {
    fn try_run_pg_stop(&self, data: &Path) -> std::io::Result<Output> {
        let path = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir("/")
            .output()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
