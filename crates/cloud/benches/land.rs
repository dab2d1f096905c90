//! Landing batches in PostgreSQL + PostGIS (issue 20), on a cluster of its
//! own: Debian's PostgreSQL 15 with PostGIS, started by the bench in a
//! temporary directory, reached over a Unix socket.
//!
//! `cargo bench -p fixgate-cloud --bench land` (1,000,000 fixes of 1,000
//! devices behind 50 gateways, in batches of 1,000). Reports, side by side:
//!
//! * fixes per second landed by 1, 2 and 4 receivers (each its own lander
//!   and pool, taking the batches in turn as an MQTT shared subscription
//!   hands them out, so one gateway's batches land through several
//!   receivers at once), each on a fresh database;
//! * the same rows through plain binary `COPY`, one per batch, into an
//!   identical table (the physical ceiling: no conflict check, no
//!   coverage, no latest positions), with as many connections at once;
//! * commit latency per batch (p50, p99);
//! * bytes per stored fix: `pg_total_relation_size` of every partition of
//!   the fix table (heap, TOAST and indexes) over the fixes in it.
//!
//! Goal: at least 50,000 fixes/s per receiver and at least half of COPY's rate.
//!
//! Run as a test (`cargo test -p fixgate-cloud --benches`) it lands 20,000
//! fixes and checks the counts instead. It needs root (to run PostgreSQL as
//! `postgres`) and `postgresql-15-postgis-3`; without them it says SKIPPED.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, TimeZone, Utc};
use fixgate_wire::fix::{DeviceId, Event, Fix, FixMode, Position, Record};
use fixgate_wire::{Batch, BatchKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use fixgate_cloud::land::{self, Lander, PgOptions};
use tokio_postgres::{Client, NoTls};

/// Debian's PostgreSQL 15 binaries.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The socket's port number: it only names the socket file, in a directory
/// of the bench's own.
const PORT: u16 = 5544;
/// Records per batch, as the gateway's `max_records`.
const BATCH: usize = 1000;
/// Transactions each receiver keeps going at once (`--pool-size`'s default).
const POOL: usize = 4;

/// A PostgreSQL cluster of the bench's own, stopped and removed on drop.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    /// initdb and start, as `postgres`; `None` (with the reason) when this
    /// machine cannot.
    fn start() -> Result<Cluster, String> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            return Err(format!("no {PG_BIN}/initdb (apt install postgresql-15)"));
        }
        if !Path::new("/usr/share/postgresql/15/extension/postgis.control").exists() {
            return Err(
                "no PostGIS for PostgreSQL 15 (apt install postgresql-15-postgis-3)".into(),
            );
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc_geteuid() } != 0 {
            return Err("not root: PostgreSQL must be started as the postgres user".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("fixgate-land-bench")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
                .map_err(|e| format!("runuser: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{} failed: {}{}",
                    args[0],
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err("chown to postgres failed (no postgres user?)".into());
        }
        let data = dir.path().join("data");
        let initdb = format!("{PG_BIN}/initdb");
        run(&[
            &initdb,
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ])?;
        // Durable commits as in production (fsync, synchronous_commit on);
        // memory and WAL sized so that the run measures landing, not
        // checkpoints.
        let options = format!(
            "-k {} -p {PORT} -c listen_addresses='' -c shared_buffers=512MB \
             -c max_wal_size=4GB -c checkpoint_timeout=30min -c max_connections=64",
            dir.path().display()
        );
        let pg_ctl = format!("{PG_BIN}/pg_ctl");
        let log = dir.path().join("postgres.log");
        run(&[
            &pg_ctl,
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ])?;
        Ok(Cluster { dir })
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// A connection string for `db`, as `--postgres` takes it.
    fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname={db}",
            self.socket().display()
        )
    }

    async fn connect(&self, db: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.conninfo(db), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {db}: {e}"));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// A fresh database with PostGIS.
    async fn database(&self, db: &str) -> Client {
        let admin = self.connect("postgres").await;
        // One statement each: several in one string make a transaction block.
        for statement in [
            format!("DROP DATABASE IF EXISTS {db}"),
            format!("CREATE DATABASE {db}"),
        ] {
            admin.batch_execute(&statement).await.expect(&statement);
        }
        let client = self.connect(db).await;
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS postgis")
            .await
            .expect("postgis");
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The workload: `n` fixes of `gateways` × `devices` vehicles at 1 Hz, as
/// each gateway's live batches of [`BATCH`] records, in the order the
/// gateways would send them (interleaved: one batch of each in turn).
fn workload(n: usize, gateways: usize, devices: usize) -> Vec<Batch> {
    let start = Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap();
    let per_gateway = n / gateways;
    let mut per: Vec<Vec<Batch>> = Vec::new();
    for g in 0..gateways {
        let gateway = format!("depot-{g}");
        let ids: Vec<DeviceId> = (0..devices)
            .map(|d| DeviceId::new(&format!("bus-{g}-{d}")).unwrap())
            .collect();
        let mut batches = Vec::new();
        let mut seq = 1u64;
        while (seq as usize) <= per_gateway {
            let last = (seq as usize + BATCH - 1).min(per_gateway) as u64;
            let records = (seq..=last)
                .map(|s| {
                    let i = (s - 1) as usize;
                    let (d, t) = (i % devices, (i / devices) as f64);
                    let time: DateTime<Utc> = start + chrono::Duration::seconds(t as i64);
                    let mut fix = Fix::new(
                        time,
                        52.0 + g as f64 * 0.01 + t * 6e-5 + ((i * 7919) % 13) as f64 * 1e-7,
                        5.0 + d as f64 * 0.001 + (t * 0.001).sin() * 0.05,
                    );
                    fix.alt = Some(20.0 + (t * 0.01).sin() * 5.0);
                    fix.speed = Some(10.0 + (t * 0.1).sin());
                    fix.course = Some((t * 0.05) % 360.0);
                    fix.hdop = Some(0.9);
                    fix.sats = Some(9);
                    fix.mode = Some(FixMode::ThreeD);
                    Record {
                        seq: s,
                        event: Event::Position(Position::new(ids[d].clone(), fix)),
                    }
                })
                .collect();
            batches.push(Batch {
                gateway: gateway.clone(),
                id: batches.len() as u64 + 1,
                kind: BatchKind::Live,
                first_seq: seq,
                last_seq: last,
                records,
            });
            seq = last + 1;
        }
        per.push(batches);
    }
    let mut out = Vec::new();
    let most = per.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..most {
        for batches in &per {
            if let Some(b) = batches.get(k) {
                out.push(b.clone());
            }
        }
    }
    out
}

/// The COPY side's table: the receiver's own `fixgate.fix` (its migration
/// run on the COPY database too) copied column for column, with its
/// generated geometry, its key and its indexes, partitioned the same way,
/// with the month of the workload.
const COPY_SCHEMA: &str = "
CREATE SCHEMA copybench;
CREATE TABLE copybench.fix (LIKE fixgate.fix INCLUDING ALL) PARTITION BY RANGE (time);
CREATE TABLE copybench.fix_y2026m11 PARTITION OF copybench.fix
    FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00');
";

const COPY_COLUMNS: &[Type] = &[
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT4,
    Type::TEXT,
    Type::FLOAT8,
    Type::BOOL,
    Type::INT8,
];

/// One batch by plain binary COPY, in its own transaction (COPY outside a
/// transaction block commits by itself).
async fn copy_batch(client: &Client, batch: &Batch) -> u64 {
    let sink = client
        .copy_in(
            "COPY copybench.fix (gateway, seq, device, time, lat, lon, alt, speed, course, \
             hdop, sats, mode, accuracy, historic, batch) FROM STDIN (FORMAT binary)",
        )
        .await
        .expect("COPY");
    let writer = BinaryCopyInWriter::new(sink, COPY_COLUMNS);
    let mut writer = std::pin::pin!(writer);
    let batch_id = batch.id as i64;
    for record in &batch.records {
        let Event::Position(p) = &record.event else {
            continue;
        };
        let f = &p.fix;
        let seq = record.seq as i64;
        let time = SystemTime::from(f.time);
        let sats = f.sats.map(i32::from);
        let mode = f.mode.map(|m| match m {
            FixMode::TwoD => "2d",
            FixMode::ThreeD => "3d",
        });
        let row: [&(dyn ToSql + Sync); 15] = [
            &batch.gateway,
            &seq,
            &p.device.as_str(),
            &time,
            &f.lat,
            &f.lon,
            &f.alt,
            &f.speed,
            &f.course,
            &f.hdop,
            &sats,
            &mode,
            &f.accuracy,
            &p.historic,
            &batch_id,
        ];
        writer.as_mut().write(&row).await.expect("COPY row");
    }
    writer.as_mut().finish().await.expect("COPY finish")
}

/// What one configuration measured.
struct Run {
    label: String,
    fixes: u64,
    elapsed: Duration,
    commits: Vec<Duration>,
    bytes_per_fix: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.fixes as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.commits.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

/// Bytes of every partition of `table` (heap, TOAST, indexes) per row in it.
async fn bytes_per_row(client: &Client, table: &str) -> (u64, f64) {
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {table}),
                        (SELECT sum(pg_total_relation_size(relid))::int8
                         FROM pg_partition_tree('{table}'::regclass))"
            ),
            &[],
        )
        .await
        .expect("sizes");
    let (rows, bytes): (i64, Option<i64>) = (row.get(0), row.get(1));
    let rows = rows as u64;
    (rows, bytes.unwrap_or(0) as f64 / rows.max(1) as f64)
}

/// The batches through `connections` connections at once, each taking the
/// next batch when it is done, by COPY.
async fn run_copy(cluster: &Cluster, batches: &Arc<Vec<Batch>>, connections: usize) -> Run {
    let db = format!("copy_{connections}");
    let mut client = cluster.database(&db).await;
    land::migrate(&mut client).await.expect("migrate");
    client
        .batch_execute(COPY_SCHEMA)
        .await
        .expect("COPY schema");
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(cluster.connect(&db).await);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let (batches, next) = (batches.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut commits = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(batch) = batches.get(i) else {
                    return commits;
                };
                let t = Instant::now();
                copy_batch(&c, batch).await;
                commits.push(t.elapsed());
            }
        }));
    }
    let mut commits = Vec::new();
    for t in tasks {
        commits.extend(t.await.expect("COPY task"));
    }
    let elapsed = started.elapsed();
    let (fixes, bytes_per_fix) = bytes_per_row(&client, "copybench.fix").await;
    Run {
        label: format!("COPY, {connections} connection(s)"),
        fixes,
        elapsed,
        commits,
        bytes_per_fix,
    }
}

/// The receivers' side: `receivers` landers (each its own pool of [`POOL`]
/// connections, as one `fixgate-receive` each), batch `i` going to receiver
/// `i % receivers` as a shared subscription hands them out, each receiver
/// landing up to [`POOL`] batches at once. Timed from the first batch to the
/// last commit; each batch is split into rows (`land::rows`) on the way, as
/// the receiver does after decoding it.
async fn run_receivers(cluster: &Cluster, batches: &Arc<Vec<Batch>>, receivers: usize) -> Run {
    let db = format!("land_{receivers}");
    let mut client = cluster.database(&db).await;
    land::migrate(&mut client).await.expect("migrate");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..receivers {
        let pool = land::pool(&PgOptions {
            conninfo: cluster.conninfo(&db),
            ca_file: None,
            pool_size: POOL,
        })
        .expect("pool");
        let lander = Arc::new(Lander::new(pool));
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..POOL {
            let (lander, next, batches) = (lander.clone(), next.clone(), batches.clone());
            tasks.push(tokio::spawn(async move {
                let mut commits = Vec::new();
                let mut new = 0;
                loop {
                    let i = r + receivers * next.fetch_add(1, Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else {
                        return (commits, new);
                    };
                    let t = Instant::now();
                    let rows = land::rows(batch).expect("a good batch");
                    let landed = lander.land(&batch.gateway, &rows).await.expect("landed");
                    commits.push(t.elapsed());
                    new += landed.new;
                }
            }));
        }
    }
    let mut commits = Vec::new();
    let mut new = 0;
    for t in tasks {
        let (c, n) = t.await.expect("receiver task");
        commits.extend(c);
        new += n;
    }
    let elapsed = started.elapsed();
    let (fixes, bytes_per_fix) = bytes_per_row(&client, "fixgate.fix").await;
    assert_eq!(new, fixes, "every fix counted new once");
    // Every gateway's batches are accounted for: no gaps.
    let gaps: i64 = client
        .query_one("SELECT count(*) FROM fixgate.gaps", &[])
        .await
        .expect("gaps")
        .get(0);
    assert_eq!(gaps, 0, "no gaps after every batch landed");
    Run {
        label: format!("{receivers} receiver(s) x {POOL} transactions"),
        fixes,
        elapsed,
        commits,
        bytes_per_fix,
    }
}

fn print(run: &Run, copy: Option<&Run>, receivers: usize) {
    let ratio = copy
        .map(|c| format!(", {:.2}× COPY", run.rate() / c.rate()))
        .unwrap_or_default();
    let per = if receivers > 0 {
        format!(" ({:.0} per receiver)", run.rate() / receivers as f64)
    } else {
        String::new()
    };
    println!(
        "{:<34} {:>9.0} fixes/s{per}{ratio}; commit p50 {:.1} ms, p99 {:.1} ms; {:.0} B/fix stored",
        run.label,
        run.rate(),
        run.percentile(0.50).as_secs_f64() * 1e3,
        run.percentile(0.99).as_secs_f64() * 1e3,
        run.bytes_per_fix,
    );
}

fn machine() -> String {
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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, gateways, devices) = if full {
        (1_000_000, 50, 20)
    } else {
        (20_000, 4, 5)
    };
    let cluster = match Cluster::start() {
        Ok(c) => c,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let batches = Arc::new(workload(n, gateways, devices));
    let fixes: usize = batches.iter().map(|b| b.records.len()).sum();
    assert_eq!(fixes, n);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("land bench on {}", machine());
        println!(
            "{n} fixes of {} vehicles behind {gateways} gateways, {} batches of up to {BATCH}; \
             PostgreSQL 15 + PostGIS over a Unix socket, fsync on",
            gateways * devices,
            batches.len()
        );
        for receivers in [1, 2, 4] {
            let copy = run_copy(&cluster, &batches, receivers * POOL).await;
            assert_eq!(copy.fixes, n as u64, "COPY stored every fix");
            let landed = run_receivers(&cluster, &batches, receivers).await;
            assert_eq!(landed.fixes, n as u64, "the receivers stored every fix");
            print(&landed, Some(&copy), receivers);
            print(&copy, None, 0);
        }
    });
}
