//! Geofence conformance: the daemon's `enter`/`exit` events on real recorded
//! tracks, cross-checked against an independent implementation of the rules
//! in Python with shapely (`tests/geofence_shapely.py`).
//!
//! Every gpsd log (`../shared/testdata/nmea/gpsd`, or `$FIXGATE_GPSD_TESTDATA`)
//! that decodes to at least [`MIN_FIXES`] fixes becomes one device, replayed
//! at full speed. The script draws fences around each track (star-shaped
//! polygons through its point cloud, one with a hole, a multipolygon, a
//! circle), and afterwards replays the daemon's feed through its own rules
//! and compares. Many logs come from parked receivers, whose jitter across a
//! boundary is exactly what the hysteresis is for.
//!
//! Two runs: raw settings, where the events must be exactly shapely's
//! inside/outside transitions (the fences keep clear of every fix, so no fix
//! is ambiguous), and the default hysteresis.
//!
//! Without the test data the tests say so and pass; without python3 or
//! shapely they fail, data or not (`scripts/test.sh` installs shapely).

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, SseClient};

/// Logs that decode to fewer fixes say little and are left out.
const MIN_FIXES: usize = 10;
/// At most this many logs (devices) per run, to bound the test's time.
const MAX_LOGS: usize = 60;
/// Seed of the fences: the same fences every run.
const SEED: u32 = 7;
/// Quiet on the feed after the last replay finished and the head was read.
const QUIET: Duration = Duration::from_secs(3);
/// How long all replays together may take.
const REPLAY_WAIT: Duration = Duration::from_secs(60);

fn data_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("FIXGATE_GPSD_TESTDATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/nmea/gpsd"),
    };
    dir.is_dir().then_some(dir)
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/geofence_shapely.py")
}

/// Runs the script; its stdout on success, a panic with everything otherwise.
fn python(args: &[&str]) -> Result<String, String> {
    let output = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install python3 and shapely (scripts/test.sh does)")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "geofence_shapely.py {} exited with {}\n{stdout}{stderr}",
            args.join(" "),
            output.status
        ))
    }
}

/// A device id from a log's name (`A-Za-z0-9._:-`, as the script does).
fn device_id(log: &Path) -> String {
    log.file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// The logs to replay, by device id, and the fences drawn around their
/// decoded fixes.
struct Setup {
    logs: Vec<(String, PathBuf)>,
    fences: PathBuf,
}

/// Decodes every log with `fixgate nmea`, keeps those with enough fixes and
/// has the script draw fences around them. `None` without test data.
fn setup(dir: &Path) -> Option<Setup> {
    // Fail loudly, before anything else (even without test data), when
    // python3 or shapely is missing or the checker itself is broken.
    if let Err(e) = python(&["selftest"]) {
        panic!("the shapely checker does not work here (scripts/test.sh installs shapely):\n{e}");
    }
    let Some(data) = data_dir() else {
        println!(
            "SKIPPED: gpsd test data not found (set FIXGATE_GPSD_TESTDATA or put it at ../shared/testdata/nmea/gpsd)"
        );
        return None;
    };
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&data)
        .expect("read test data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let tracks = dir.join("tracks");
    std::fs::create_dir_all(&tracks).expect("tracks dir");
    let mut kept = Vec::new();
    for log in logs {
        let output = Command::new(env!("CARGO_BIN_EXE_fixgate"))
            .arg("nmea")
            .arg(&log)
            .output()
            .expect("run fixgate nmea");
        let fixes = output
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        if !output.status.success() || fixes < MIN_FIXES {
            continue;
        }
        let device = device_id(&log);
        let track = tracks.join(format!("{device}.jsonl"));
        std::fs::write(&track, &output.stdout).expect("write track");
        kept.push((device, log, track));
        if kept.len() == MAX_LOGS {
            break;
        }
    }
    assert!(
        !kept.is_empty(),
        "no log in {} decodes to {MIN_FIXES} fixes",
        data.display()
    );
    let fences = dir.join("fences.geojson");
    let mut args = vec![
        "fences".to_owned(),
        "--seed".to_owned(),
        SEED.to_string(),
        "--out".to_owned(),
        fences.display().to_string(),
    ];
    args.extend(kept.iter().map(|(_, _, t)| t.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python(&args).unwrap_or_else(|e| panic!("drawing the fences failed:\n{e}"));
    Some(Setup {
        logs: kept.into_iter().map(|(d, l, _)| (d, l)).collect(),
        fences,
    })
}

/// The hysteresis options of one run, as TOML keys and as the script's flags.
struct Run {
    label: &'static str,
    enter_fixes: u32,
    exit_margin_m: f64,
    hdop_error_m: f64,
    default_error_m: f64,
    strict: bool,
}

/// The daemon replays every log with the run's options; the whole feed goes
/// to `feed.jsonl`, and the script checks it. Panics with the script's
/// report on any mismatch.
fn cross_check(run: &Run) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let Some(setup) = setup(dir.path()) else {
        return;
    };
    let mut config = String::new();
    writeln!(
        config,
        "[geofence]\nfiles = [\"{}\"]\nenter_fixes = {}\nexit_margin_m = {:?}\nhdop_error_m = {:?}\ndefault_error_m = {:?}\n",
        setup.fences.display(),
        run.enter_fixes,
        run.exit_margin_m,
        run.hdop_error_m,
        run.default_error_m,
    )
    .unwrap();
    for (device, log) in &setup.logs {
        writeln!(
            config,
            "[[replay]]\ndevice = \"{device}\"\npath = \"{}\"\npace = \"max\"\n",
            log.display()
        )
        .unwrap();
    }
    let daemon = Daemon::start(dir.path(), &config);
    let feed = collect_feed(&daemon, setup.logs.len());
    let feed_path = dir.path().join("feed.jsonl");
    let mut file = std::fs::File::create(&feed_path).expect("feed file");
    for line in &feed {
        writeln!(file, "{line}").expect("write feed");
    }
    drop(file);
    daemon.terminate();

    let flags = vec![
        "check".to_owned(),
        "--fences".to_owned(),
        setup.fences.display().to_string(),
        "--feed".to_owned(),
        feed_path.display().to_string(),
        "--label".to_owned(),
        run.label.to_owned(),
        "--enter-fixes".to_owned(),
        run.enter_fixes.to_string(),
        "--exit-margin-m".to_owned(),
        run.exit_margin_m.to_string(),
        "--hdop-error-m".to_owned(),
        run.hdop_error_m.to_string(),
        "--default-error-m".to_owned(),
        run.default_error_m.to_string(),
    ];
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    if run.strict {
        args.push("--strict");
    }
    match python(&args) {
        // One print: the two tests' tables do not interleave.
        Ok(report) => println!(
            "{report}({} feed events, {:.1} s)\n",
            feed.len(),
            started.elapsed().as_secs_f64()
        ),
        Err(report) => {
            // Keep the inputs for a look when asked to.
            if let Some(keep) = std::env::var_os("FIXGATE_KEEP_GEOFENCE_RUN") {
                let keep = PathBuf::from(keep).join(run.label);
                let _ = std::fs::create_dir_all(&keep);
                let _ = std::fs::copy(&setup.fences, keep.join("fences.geojson"));
                let _ = std::fs::copy(&feed_path, keep.join("feed.jsonl"));
            }
            panic!(
                "fixgate's geofence events differ from shapely's ({}; set FIXGATE_KEEP_GEOFENCE_RUN=DIR to keep the fences and feed):\n{report}",
                run.label
            );
        }
    }
}

/// Every event of the feed from the first record on, as JSON Lines of
/// `{"seq", "event", "data"}`, once all `replays` have finished and the feed
/// has caught up with the store and stayed quiet for [`QUIET`].
fn collect_feed(daemon: &Daemon, replays: usize) -> Vec<String> {
    let deadline = Instant::now() + REPLAY_WAIT;
    loop {
        let finished = daemon.log_text().matches("replay finished").count();
        if finished >= replays {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {finished} of {replays} replays finished in {REPLAY_WAIT:?}:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The writer may still be storing what the replays sent: wait for the
    // head to stand still.
    let mut head = daemon.head();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = daemon.head();
        if now == head {
            break;
        }
        head = now;
    }
    let base = daemon.base();
    let client = SseClient::connect(daemon.port, "", Some(&base.to_string()));
    let mut lines = Vec::new();
    let mut last = base;
    loop {
        let wait = if last >= head { QUIET } else { REPLAY_WAIT };
        let Some(event) = client.next_event(wait) else {
            assert!(
                last >= head,
                "the feed stopped at {last}, before the head {head}"
            );
            break;
        };
        let seq = event.id.as_deref().and_then(|i| i.parse::<u64>().ok());
        if let Some(seq) = seq {
            last = last.max(seq);
        }
        let name = event.event.clone().unwrap_or_else(|| "message".to_owned());
        assert_ne!(name, "reset", "the feed reset: {}", event.data);
        let line = serde_json::json!({"seq": seq, "event": name, "data": event.json()});
        lines.push(line.to_string());
    }
    lines
}

#[test]
fn raw_settings_give_exactly_shapelys_inside_outside_transitions() {
    cross_check(&Run {
        label: "raw",
        enter_fixes: 1,
        exit_margin_m: 0.0,
        hdop_error_m: 0.0,
        default_error_m: 0.0,
        strict: true,
    });
}

#[test]
fn default_hysteresis_agrees_with_shapely() {
    cross_check(&Run {
        label: "hysteresis",
        enter_fixes: 3,
        exit_margin_m: 10.0,
        hdop_error_m: 5.0,
        default_error_m: 10.0,
        strict: false,
    });
}
