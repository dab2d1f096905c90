//! A real `chronyd` (Debian's chrony 4.3) of the test's own, with one
//! `refclock SOCK` for fixgate, and `chronyc` to ask it.
//!
//! It runs with `-x` (it never touches the system clock), on no NTP port
//! (`port 0`) and no UDP command port (`cmdport 0`): `chronyc` talks to it
//! through a command socket in the test's directory. As root it is told to
//! stay root (`-u root`; chronyd would otherwise switch to `_chrony`, who
//! cannot reach the test's directory). As any other user it is started with
//! `-U -u USER`: `-U` lets chronyd start without root (fine with `-x`), and
//! `-u USER` makes the user it checks the command socket's directory
//! against (owner and group must be its) the user it runs as.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHRONYD: &str = "/usr/sbin/chronyd";
pub const CHRONYC: &str = "/usr/bin/chronyc";

/// What is missing to run chrony, if anything.
pub fn missing_peer() -> Option<String> {
    [CHRONYD, CHRONYC]
        .into_iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} not found (apt-get install chrony)"))
}

/// `None` after saying why when chrony is missing outside CI; in CI (`CI`
/// set) a missing chrony is a failure, so a broken install cannot pass as
/// a skipped test.
pub fn available(what: &str) -> bool {
    let Some(missing) = missing_peer() else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{what} cannot run: {missing} (scripts/test.sh installs it)");
    }
    println!("SKIPPED: {what}: {missing} (scripts/test.sh installs it)");
    false
}

/// A running chronyd; stopped on drop.
pub struct Chronyd {
    child: Child,
    /// The refclock's socket, which chronyd binds: fixgate's `chrony_socket`.
    pub socket: PathBuf,
    command: PathBuf,
    dir: PathBuf,
}

/// One source as `chronyc -c sources` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The 8-bit reachability register (chronyc prints it in octal).
    pub reach: u32,
    /// The last sample's offset as measured, in seconds: the system clock
    /// minus the source (positive when the system clock is ahead).
    pub last_offset: f64,
    /// Its error bound, in seconds.
    pub error: f64,
}

/// One source as `chronyc -c sourcestats` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Samples in the regression.
    pub samples: u32,
    /// The estimated offset, in seconds.
    pub offset: f64,
    /// The samples' standard deviation, in seconds.
    pub std_dev: f64,
}

impl Chronyd {
    /// Starts chronyd in a directory `chrony` under `dir`, with `refclock SOCK <dir>/fixgate.sock refid FXGT`
    /// and `options` after it, and waits until it answers.
    pub fn start(dir: &Path, options: &str) -> Chronyd {
        // chronyd wants its command socket's directory closed to others.
        let dir = &dir.join("chrony");
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(dir)
            .expect("chrony dir");
        let socket = dir.join("fixgate.sock");
        let command = dir.join("chronyd.sock");
        let conf = dir.join("chrony.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "refclock SOCK {socket} refid FXGT {options}\n\
                 bindcmdaddress {command}\n\
                 cmdport 0\n\
                 port 0\n\
                 pidfile {d}/chronyd.pid\n\
                 driftfile {d}/chrony.drift\n\
                 logdir {d}\n\
                 log refclocks\n",
                socket = socket.display(),
                command = command.display(),
            ),
        )
        .expect("write chrony.conf");
        let log = std::fs::File::create(dir.join("chronyd.log")).expect("chronyd log");
        let mut cmd = Command::new(CHRONYD);
        cmd.args(["-x", "-d", "-f"]).arg(&conf);
        let user = Command::new("id").arg("-un").output().expect("id -un");
        let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
        if user == "root" {
            cmd.args(["-u", "root"]);
        } else {
            cmd.args(["-U", "-u", &user]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start chronyd");
        let chronyd = Chronyd {
            child,
            socket,
            command,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while chronyd.source().is_none() {
            assert!(
                Instant::now() < deadline,
                "chronyd did not answer:\n{}",
                chronyd.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(chronyd.socket.exists(), "chronyd made no refclock socket");
        chronyd
    }

    /// `chronyc -n ARGS` on this chronyd's command socket, its stdout.
    pub fn chronyc(&self, args: &[&str]) -> String {
        let out = Command::new(CHRONYC)
            .arg("-h")
            .arg(&self.command)
            .arg("-n")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run chronyc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The FXGT refclock in `chronyc -c sources`, once chronyd answers.
    pub fn source(&self) -> Option<Source> {
        let text = self.chronyc(&["-c", "sources"]);
        // Mode,State,Name,Stratum,Poll,Reach,LastRx,Last offset,
        // offset as measured,error bound.
        let f = fxgt_line(&text)?;
        Some(Source {
            reach: u32::from_str_radix(f.get(5)?, 8).ok()?,
            last_offset: f.get(8)?.parse().ok()?,
            error: f.get(9)?.parse().ok()?,
        })
    }

    /// The FXGT refclock in `chronyc -c sourcestats`.
    pub fn stats(&self) -> Option<Stats> {
        let text = self.chronyc(&["-c", "sourcestats"]);
        // Name,NP,NR,Span,Frequency,Freq Skew,Offset,Std Dev.
        let f = fxgt_line(&text)?;
        Some(Stats {
            samples: f.get(1)?.parse().ok()?,
            offset: f.get(6)?.parse().ok()?,
            std_dev: f.get(7)?.parse().ok()?,
        })
    }

    /// Every FXGT sample chronyd logged (`log refclocks`), in order: its
    /// time (the system time fixgate read the sentence at, Unix seconds)
    /// and its raw offset (seconds). Only lines with a filter index: the
    /// filtered results are logged with `-` there.
    pub fn raw_samples(&self) -> Vec<(f64, f64)> {
        let text = std::fs::read_to_string(self.dir.join("refclocks.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.get(2) != Some(&"FXGT") || f.get(3) == Some(&"-") {
                    return None;
                }
                let at = format!("{} {}", f.first()?, f.get(1)?);
                let at = chrono::NaiveDateTime::parse_from_str(&at, "%Y-%m-%d %H:%M:%S%.f").ok()?;
                let at = at.and_utc();
                let secs = at.timestamp() as f64 + f64::from(at.timestamp_subsec_nanos()) * 1e-9;
                Some((secs, f.get(6)?.parse().ok()?))
            })
            .collect()
    }

    /// The raw offsets of [`Chronyd::raw_samples`].
    pub fn raw_offsets(&self) -> Vec<f64> {
        self.raw_samples().into_iter().map(|(_, o)| o).collect()
    }

    /// What chronyd logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("chronyd.log")).unwrap_or_default()
    }
}

fn fxgt_line(text: &str) -> Option<Vec<&str>> {
    text.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.contains(&"FXGT"))
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays a receiver on `receiver` that sends each second's epoch (RMC, VTG,
/// GGA, GSA, GLL of a simulated vehicle, with the current date and time)
/// `delay` after the second begins, as real receivers do, for `seconds`.
/// Returns each write's second (Unix) and how late past that second it
/// actually happened (the scheduler's share of the jitter).
pub fn send_current_time(
    receiver: &mut super::PtyReceiver,
    seconds: usize,
    delay: Duration,
) -> Vec<(i64, Duration)> {
    use chrono::{DurationRound, Utc};
    let mut late = Vec::with_capacity(seconds);
    let mut fleet = fixgate::sim::Fleet::new(1, (52.0907, 5.1214), 7);
    for _ in 0..seconds {
        let now = Utc::now();
        let second = now
            .duration_trunc(chrono::Duration::seconds(1))
            .expect("second")
            + chrono::Duration::seconds(1);
        let due = second + chrono::Duration::from_std(delay).expect("delay");
        if let Ok(wait) = (due - now).to_std() {
            std::thread::sleep(wait);
        }
        let mut text = String::new();
        for fix in fleet.step(1.0, second) {
            fixgate::sim::nmea::write_epoch(&fix, &mut text);
        }
        let written = Utc::now();
        receiver.send(text.as_bytes());
        late.push((
            second.timestamp(),
            (written - second).to_std().unwrap_or_default(),
        ));
    }
    late
}
