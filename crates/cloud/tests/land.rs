//! Landing batches in a real PostgreSQL 15 + PostGIS (tests/common/pg.rs).

mod common;

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use common::pg::Pg;
use fixgate_cloud::fix::{DeviceId, Event, Fix, Position, Presence, Record, Status};
use fixgate_cloud::land::{self, BadInput, Landed, Lander, PgOptions};
use fixgate_cloud::wire::{Batch, BatchKind};

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

fn position(seq: u64, device: &str, time: DateTime<Utc>, historic: bool) -> Record {
    let mut p = Position::new(
        DeviceId::new(device).unwrap(),
        Fix::new(time, 52.0 + seq as f64 * 0.001, 5.0 + seq as f64 * 0.001),
    );
    p.fix.speed = Some(3.5);
    p.historic = historic;
    Record {
        seq,
        event: Event::Position(p),
    }
}

fn fixes(seqs: impl IntoIterator<Item = u64>) -> Vec<Record> {
    seqs.into_iter()
        .map(|s| position(s, "bus-1", t(s as i64), false))
        .collect()
}

fn batch(kind: BatchKind, first: u64, last: u64, records: Vec<Record>) -> Batch {
    Batch {
        gateway: "gw-1".into(),
        id: first,
        kind,
        first_seq: first,
        last_seq: last,
        records,
    }
}

async fn lander(pg: &Pg) -> Lander {
    let mut client = pg.client().await;
    land::migrate(&mut client).await.expect("migrate");
    let pool = land::pool(&PgOptions {
        conninfo: pg.conninfo(),
        ca_file: None,
        pool_size: 2,
    })
    .unwrap();
    Lander::new(pool)
}

async fn put(lander: &Lander, batch: &Batch) -> Landed {
    let rows = land::rows(batch).expect("a good batch");
    lander.land(&batch.gateway, &rows).await.expect("landed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lands_with_fixes_events_geometry_latest_and_coverage() {
    let pg = Pg::start();
    let lander = lander(&pg).await;
    let mut records = fixes(1..=3);
    records.push(Record {
        seq: 4,
        event: Event::Status(Status {
            device: DeviceId::new("bus-1").unwrap(),
            status: Presence::Offline,
            time: t(4),
        }),
    });
    let mut g = fixgate_cloud::fix::Geofence::example("bus-1", t(5));
    g.historic = false;
    records.push(Record {
        seq: 5,
        event: Event::Geofence(g),
    });
    let landed = put(&lander, &batch(BatchKind::Live, 1, 5, records)).await;
    assert_eq!(
        landed,
        Landed {
            new: 5,
            duplicates: 0
        }
    );
    assert_eq!(
        pg.psql("SELECT count(*), count(geom), min(seq), max(seq) FROM fixgate.fix"),
        "3|3|1|3"
    );
    assert_eq!(
        pg.psql("SELECT ST_AsText(geom), speed, historic, batch FROM fixgate.fix WHERE seq = 2"),
        "POINT(5.002 52.002)|3.5|f|1"
    );
    assert_eq!(
        pg.psql("SELECT tableoid::regclass FROM fixgate.fix LIMIT 1"),
        "fixgate.fix_y2026m05"
    );
    assert_eq!(
        pg.psql(
            "SELECT seq, kind, geom IS NULL, data->>'status', data->>'gateway' FROM fixgate.event ORDER BY seq"
        ),
        "4|status|t|offline|gw-1\n5|geofence|f||gw-1"
    );
    assert_eq!(
        pg.psql("SELECT device, seq, ST_AsText(geom) FROM fixgate.latest_position"),
        "bus-1|3|POINT(5.003 52.003)"
    );
    assert_eq!(
        pg.psql("SELECT seqs FROM fixgate.coverage WHERE gateway = 'gw-1'"),
        "{[1,6)}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM fixgate.gaps"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_is_all_duplicate_and_a_partly_duplicate_one_counts_exactly() {
    let pg = Pg::start();
    let lander = lander(&pg).await;
    let first = batch(BatchKind::Live, 1, 10, fixes(1..=10));
    assert_eq!(
        put(&lander, &first).await,
        Landed {
            new: 10,
            duplicates: 0
        }
    );
    assert_eq!(
        put(&lander, &first).await,
        Landed {
            new: 0,
            duplicates: 10
        }
    );
    let overlapping = batch(BatchKind::Live, 6, 15, fixes(6..=15));
    assert_eq!(
        put(&lander, &overlapping).await,
        Landed {
            new: 5,
            duplicates: 5
        }
    );
    assert_eq!(pg.psql("SELECT count(*) FROM fixgate.fix"), "15");
    assert_eq!(pg.psql("SELECT seqs FROM fixgate.coverage"), "{[1,16)}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_covers_only_its_records_and_the_gaps_view_shows_the_hole_until_a_backlog() {
    let pg = Pg::start();
    let lander = lander(&pg).await;
    put(&lander, &batch(BatchKind::Live, 1, 10, fixes(1..=10))).await;
    let snapshot = batch(
        BatchKind::Snapshot,
        17,
        30,
        vec![
            position(17, "bus-1", t(17), false),
            position(25, "bus-2", t(25), false),
            position(30, "bus-3", t(30), false),
        ],
    );
    assert_eq!(
        put(&lander, &snapshot).await,
        Landed {
            new: 3,
            duplicates: 0
        }
    );
    assert_eq!(
        pg.psql("SELECT first_seq, last_seq FROM fixgate.gaps ORDER BY first_seq"),
        "11|16\n18|24\n26|29"
    );
    let backlog: Vec<Record> = (11..=30)
        .map(|s| position(s, "bus-1", t(s as i64), true))
        .collect();
    let landed = put(&lander, &batch(BatchKind::Backlog, 11, 30, backlog)).await;
    assert_eq!(
        landed,
        Landed {
            new: 17,
            duplicates: 3
        }
    );
    assert_eq!(pg.psql("SELECT count(*) FROM fixgate.gaps"), "0");
    assert_eq!(pg.psql("SELECT seqs FROM fixgate.coverage"), "{[1,31)}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_not_moved_by_an_older_or_a_historic_fix() {
    let pg = Pg::start();
    let lander = lander(&pg).await;
    put(
        &lander,
        &batch(
            BatchKind::Live,
            5,
            5,
            vec![position(5, "bus-1", t(100), false)],
        ),
    )
    .await;
    // Older, though a higher number.
    put(
        &lander,
        &batch(
            BatchKind::Live,
            6,
            6,
            vec![position(6, "bus-1", t(50), false)],
        ),
    )
    .await;
    // Newer, but historic.
    put(
        &lander,
        &batch(
            BatchKind::Backlog,
            7,
            7,
            vec![position(7, "bus-1", t(200), true)],
        ),
    )
    .await;
    assert_eq!(pg.psql("SELECT seq FROM fixgate.latest"), "5");
    // Newer and live: moves it.
    put(
        &lander,
        &batch(
            BatchKind::Live,
            8,
            8,
            vec![position(8, "bus-1", t(300), false)],
        ),
    )
    .await;
    assert_eq!(
        pg.psql("SELECT seq, time = '2026-05-01 12:05:00+00' FROM fixgate.latest"),
        "8|t"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_above_i64_max_is_refused_and_nothing_is_written() {
    let pg = Pg::start();
    let lander = lander(&pg).await;
    let big = i64::MAX as u64 + 1;
    let b = batch(
        BatchKind::Live,
        1,
        big,
        vec![
            position(1, "bus-1", t(1), false),
            position(big, "bus-1", t(2), false),
        ],
    );
    assert_eq!(land::rows(&b), Err(BadInput::SeqTooLarge(big)));
    // Inconsistent batches are refused the same way.
    let reversed = batch(BatchKind::Live, 5, 1, Vec::new());
    assert!(matches!(
        land::rows(&reversed),
        Err(BadInput::Inconsistent(_))
    ));
    let _ = &lander;
    assert_eq!(
        pg.psql(
            "SELECT (SELECT count(*) FROM fixgate.fix) + (SELECT count(*) FROM fixgate.coverage)"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_migrating_at_once_both_succeed() {
    let pg = Pg::start();
    let (mut a, mut b) = (pg.client().await, pg.client().await);
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { land::migrate(&mut a).await }),
        tokio::spawn(async move { land::migrate(&mut b).await }),
    );
    let (ra, rb) = (ra.unwrap().expect("first"), rb.unwrap().expect("second"));
    // Exactly one of them applied version 1.
    assert_eq!([ra, rb].concat(), [1]);
    assert_eq!(
        pg.psql("SELECT version FROM fixgate.schema_migrations"),
        "1"
    );
    // And again later: nothing to do.
    let mut c = pg.client().await;
    assert!(land::migrate(&mut c).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_landers_creating_the_same_new_month_at_once_both_land() {
    let pg = Pg::start();
    let first = Arc::new(lander(&pg).await);
    let second = Arc::new(lander(&pg).await);
    let mut tasks = Vec::new();
    for (i, lander) in [first, second].into_iter().enumerate() {
        let gateway = format!("gw-{i}");
        tasks.push(tokio::spawn(async move {
            let mut b = batch(BatchKind::Live, 1, 3, fixes(1..=3));
            b.gateway = gateway;
            let rows = land::rows(&b).unwrap();
            lander.land(&b.gateway, &rows).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().new, 3);
    }
    assert_eq!(pg.psql("SELECT count(*) FROM fixgate.fix_y2026m05"), "6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_is_a_linestring_in_time_order() {
    let pg = Pg::start();
    let lander = lander(&pg).await;
    // Numbered against time: the line must follow time.
    let records = vec![
        position(1, "bus-1", t(30), false),
        position(2, "bus-1", t(10), false),
        position(3, "bus-1", t(20), false),
        position(4, "bus-2", t(15), false),
    ];
    put(&lander, &batch(BatchKind::Live, 1, 4, records)).await;
    assert_eq!(
        pg.psql(
            "SELECT GeometryType(g), ST_SRID(g), ST_AsText(g) FROM fixgate.track('gw-1', 'bus-1', \
             '2026-05-01 00:00:00+00', '2026-05-02 00:00:00+00') AS g"
        ),
        "LINESTRING|4326|LINESTRING(5.002 52.002,5.003 52.003,5.001 52.001)"
    );
}

/// Throughput of one receiver's lander: 100 batches of 1000 fixes, four
/// at a time (the default pool). A measurement, not a check: run with
/// `--ignored --nocapture` (debug build, fsync off: indicative only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn throughput_of_batches_of_a_thousand_fixes() {
    let pg = Pg::start();
    let mut client = pg.client().await;
    land::migrate(&mut client).await.unwrap();
    let pool = land::pool(&PgOptions {
        conninfo: pg.conninfo(),
        ca_file: None,
        pool_size: 4,
    })
    .unwrap();
    let lander = Arc::new(Lander::new(pool));
    let batches: Vec<Arc<land::Rows>> = (0..100u64)
        .map(|i| {
            let first = i * 1000 + 1;
            let b = batch(
                BatchKind::Live,
                first,
                first + 999,
                fixes(first..=first + 999),
            );
            Arc::new(land::rows(&b).unwrap())
        })
        .collect();
    let started = std::time::Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for rows in batches {
        let (lander, slot) = (lander.clone(), slots.clone().acquire_owned().await.unwrap());
        tasks.push(tokio::spawn(async move {
            let _slot = slot;
            lander.land("gw-1", &rows).await.unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().new, 1000);
    }
    let rate = 100_000.0 / started.elapsed().as_secs_f64();
    eprintln!("{rate:.0} fixes/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_under_numbers_already_covered_are_duplicates_whatever_they_say() {
    let pg = Pg::start();
    let lander = lander(&pg).await;
    put(&lander, &batch(BatchKind::Live, 1, 3, fixes(1..=3))).await;
    // The same numbers with other times and places: a forged or corrupted
    // resend. The key (gateway, seq, time) alone would take them.
    let forged: Vec<Record> = (1..=3)
        .map(|s| position(s, "bus-1", t(1000 + s as i64), false))
        .collect();
    let landed = put(&lander, &batch(BatchKind::Backlog, 1, 3, forged)).await;
    assert_eq!(
        landed,
        Landed {
            new: 0,
            duplicates: 3
        }
    );
    assert_eq!(pg.psql("SELECT count(*) FROM fixgate.fix"), "3");
    assert_eq!(
        pg.psql("SELECT seq, time = '2026-05-01 12:00:03+00' FROM fixgate.latest"),
        "3|t",
        "the latest position stays the real one"
    );
    // A batch partly under covered numbers takes only the new ones.
    let mut mixed = vec![position(3, "bus-1", t(2000), false)];
    mixed.extend(fixes(4..=5));
    let landed = put(&lander, &batch(BatchKind::Live, 3, 5, mixed)).await;
    assert_eq!(
        landed,
        Landed {
            new: 2,
            duplicates: 1
        }
    );
    assert_eq!(pg.psql("SELECT count(*), max(seq) FROM fixgate.fix"), "5|5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_dropped_under_a_running_receiver_is_made_again_on_the_retry() {
    let pg = Pg::start();
    let lander = lander(&pg).await;
    put(&lander, &batch(BatchKind::Live, 1, 2, fixes(1..=2))).await;
    pg.psql("DROP TABLE fixgate.fix_y2026m05");
    // A late fix of the dropped month: the lander still believes the month
    // is there, so the first try fails (no partition for the row) ...
    let late = batch(BatchKind::Backlog, 3, 3, fixes(3..=3));
    let rows = land::rows(&late).expect("a good batch");
    assert!(lander.land(&late.gateway, &rows).await.is_err());
    // ... and the retry, as the receiver makes it, lands it in a new month.
    let landed = lander.land(&late.gateway, &rows).await.expect("landed");
    assert_eq!(
        landed,
        Landed {
            new: 1,
            duplicates: 0
        }
    );
    assert_eq!(
        pg.psql("SELECT tableoid::regclass, seq FROM fixgate.fix"),
        "fixgate.fix_y2026m05|3"
    );
}
