//! A throwaway PostgreSQL 15 cluster (Debian's `postgresql-15` with
//! `postgresql-15-postgis-3`) for tests of the cloud side: initdb'd into a
//! temp dir owned by the `postgres` user, listening on a Unix socket only,
//! queried with Debian's `psql`. Stopped (immediately) on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Debian's PostgreSQL 15 server binaries.
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The database the receivers land in.
pub const DATABASE: &str = "fixgate";

/// A running cluster: data, socket and log in a temp dir of its own.
pub struct Postgres {
    dir: tempfile::TempDir,
    /// The port in the socket's name (nothing listens on TCP).
    pub port: u16,
    running: bool,
}

impl Postgres {
    /// initdb (trust authentication), start, and create [`DATABASE`].
    pub fn start() -> Postgres {
        assert!(
            Path::new(BIN).join("initdb").exists()
                && Path::new("/usr/share/postgresql/15/extension/postgis.control").exists(),
            "PostgreSQL 15 with PostGIS is not installed (apt install postgresql-15 postgresql-15-postgis-3)"
        );
        let dir = tempfile::Builder::new()
            .prefix("fixgate-pg-")
            .tempdir()
            .expect("temp dir");
        // The server refuses to run as root: the whole dir is postgres's.
        let pg = Postgres {
            port: free_port(),
            running: false,
            dir,
        };
        std::fs::create_dir_all(pg.socket_dir()).expect("socket dir");
        run(
            "chown",
            &["-R", "postgres:postgres", &path_str(pg.dir.path())],
            false,
        );
        let data = path_str(&pg.data_dir());
        run_as_postgres(
            &format!("{BIN}/initdb"),
            &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8"],
        );
        let mut pg = pg;
        pg.start_server();
        pg.psql_db("postgres", &format!("CREATE DATABASE {DATABASE}"));
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the server's socket lives (libpq's `host=`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The server's log (all starts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A libpq key/value connection string for [`DATABASE`].
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname={DATABASE}",
            self.socket_dir().display(),
            self.port
        )
    }

    /// Starts the server on the existing data dir and waits until it
    /// accepts connections (`pg_ctl -w`).
    pub fn start_server(&mut self) {
        // Durability against a crash of the server, not of the machine:
        // fsync off saves the test machine's disk.
        let options = format!(
            "-k {} -p {} -c listen_addresses='' -c fsync=off -c max_connections=100",
            self.socket_dir().display(),
            self.port
        );
        run_as_postgres(
            &format!("{BIN}/pg_ctl"),
            &[
                "-D",
                &path_str(&self.data_dir()),
                "-l",
                &path_str(&self.log_path()),
                "-o",
                &options,
                "-t",
                "60",
                "-w",
                "start",
            ],
        );
        self.running = true;
    }

    /// Stops the server the hard way (`-m immediate`: no checkpoint, every
    /// connection cut, crash recovery at the next start).
    pub fn stop_immediate(&mut self) {
        self.pg_ctl_stop("immediate");
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        run_as_postgres(
            &format!("{BIN}/pg_ctl"),
            &[
                "-D",
                &path_str(&self.data_dir()),
                "-m",
                mode,
                "-t",
                "60",
                "-w",
                "stop",
            ],
        );
        self.running = false;
    }

    /// Runs `sql` in [`DATABASE`]; its rows as `|`-separated lines,
    /// without header or footer. Panics (with psql's stderr) on an error.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db(DATABASE, sql)
    }

    /// [`Postgres::psql`], `None` instead of a panic when psql fails (the
    /// server is down, a table is not there yet).
    pub fn try_psql(&self, sql: &str) -> Option<String> {
        let out = self.psql_command(DATABASE, sql).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn psql_db(&self, db: &str, sql: &str) -> String {
        let out = self
            .psql_command(db, sql)
            .output()
            .expect("psql (apt install postgresql-client-15)");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn psql_command(&self, db: &str, sql: &str) -> Command {
        let mut cmd = Command::new("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", "|"])
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .stdin(Stdio::null());
        cmd
    }

    /// One number from a query that yields one (e.g. `SELECT count(*) ...`);
    /// `None` when the query fails.
    pub fn count(&self, sql: &str) -> Option<i64> {
        self.try_psql(sql)?.trim().parse().ok()
    }

    /// Waits until the server answers a query again (after a start).
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.try_psql("SELECT 1").is_none() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not answer:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(format!("{BIN}/pg_ctl"))
                .args(["-D", &path_str(&self.data_dir()), "-m", "immediate", "-w"])
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temp path").to_owned()
}

/// Runs `program args` as the `postgres` user, asserting success.
fn run_as_postgres(program: &str, args: &[&str]) {
    run(program, args, true);
}

/// Runs `program args` (as `postgres` when `as_postgres`, else as
/// ourselves), asserting success.
fn run(program: &str, args: &[&str], as_postgres: bool) {
    let mut cmd = if as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", program]);
        cmd
    } else {
        Command::new(program)
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
