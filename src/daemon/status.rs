//! The daemon's one-line status, every few seconds: systemd shows it in
//! `systemctl status fixgate` (`STATUS=`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::pipeline::WriterHealth;
use crate::readers::uplink::Report;

/// How often the status line is renewed.
pub const EVERY: Duration = Duration::from_secs(10);

/// What the status line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Devices tracked, and online.
    pub devices: u64,
    /// Devices online.
    pub online: u64,
    /// Fixes stored per second since the last line.
    pub fixes_per_s: f64,
    /// The uplink's connection: `None` when there is no uplink.
    pub uplink_up: Option<bool>,
    /// Events not yet acknowledged upstream, and the oldest one's age.
    pub backlog: Option<(u64, Option<Duration>)>,
    /// True while the store refuses writes.
    pub store_failing: bool,
}

impl Status {
    /// The `STATUS=` text, e.g. `12 devices (10 online), 9.8 fixes/s,
    /// uplink up, backlog 0`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} devices ({} online), {:.1} fixes/s",
            self.devices, self.online, self.fixes_per_s
        );
        match self.uplink_up {
            None => line.push_str(", uplink off"),
            Some(up) => {
                line.push_str(if up { ", uplink up" } else { ", uplink DOWN" });
                if let Some((records, oldest)) = self.backlog {
                    line.push_str(&format!(", backlog {records}"));
                    if let Some(age) = oldest.filter(|_| records > 0) {
                        line.push_str(&format!(
                            " (oldest {})",
                            humantime::format_duration(Duration::from_secs(age.as_secs()))
                        ));
                    }
                }
            }
        }
        if self.store_failing {
            line.push_str(", STORE REFUSING WRITES");
        }
        line
    }
}

/// Renews the status line every [`EVERY`]; `uplink` is the uplink's own
/// report, `None` when there is none.
pub async fn run(
    health: Arc<WriterHealth>,
    uplink: Option<Arc<Report>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = (Instant::now(), health.accepted.load(Ordering::Relaxed));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = (Instant::now(), health.accepted.load(Ordering::Relaxed));
        let seconds = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
        let fixes_per_s = now.1.saturating_sub(last.1) as f64 / seconds;
        last = now;
        let backlog = uplink
            .as_ref()
            .and_then(|u| u.backlog())
            .map(|usage| (usage.records, usage.oldest_age(chrono::Utc::now())));
        let status = Status {
            devices: health.devices.load(Ordering::Relaxed),
            online: health.online.load(Ordering::Relaxed),
            fixes_per_s,
            uplink_up: uplink.as_ref().map(|u| u.connected()),
            backlog,
            store_failing: health.store_failing.load(Ordering::Relaxed),
        };
        crate::daemon::systemd::status(&status.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_devices_rate_uplink_and_backlog() {
        let mut s = Status {
            devices: 12,
            online: 10,
            fixes_per_s: 9.84,
            uplink_up: None,
            backlog: None,
            store_failing: false,
        };
        assert_eq!(s.line(), "12 devices (10 online), 9.8 fixes/s, uplink off");
        s.uplink_up = Some(false);
        s.backlog = Some((4_000, Some(Duration::from_secs(3_725))));
        assert_eq!(
            s.line(),
            "12 devices (10 online), 9.8 fixes/s, uplink DOWN, backlog 4000 (oldest 1h 2m 5s)"
        );
        s.uplink_up = Some(true);
        s.backlog = Some((0, Some(Duration::from_secs(5))));
        s.store_failing = true;
        assert_eq!(
            s.line(),
            "12 devices (10 online), 9.8 fixes/s, uplink up, backlog 0, STORE REFUSING WRITES"
        );
    }
}
