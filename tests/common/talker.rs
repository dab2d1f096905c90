//! A receiver that talks only at its own line speed, for `baud = "auto"`
//! (tests/serial_baud.rs, benches/baud_lock.rs). A pty carries bytes at any
//! speed, so before each burst it reads the speed the daemon set on its end
//! of the line (termios on a pty's master acts on the slave) and sends valid
//! NMEA only when that is its true rate; otherwise what a UART at the
//! daemon's rate would make of the same bytes, bit by bit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DurationRound, Utc};
use fixgate::sim::uart::uart_at;

use super::PtyReceiver;

/// A receiver talking at its `rate` into a pty, one epoch per `every` with
/// fix times one second apart, from twenty minutes ago (inside `max_future`
/// for the few minutes a test runs).
pub struct Talker {
    rate: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl Talker {
    pub fn start(mut pty: PtyReceiver, every: Duration, rate: u32, seed: u64) -> Talker {
        let rate = Arc::new(AtomicU32::new(rate));
        let stop = Arc::new(AtomicBool::new(false));
        let (rate_in, stop_in) = (rate.clone(), stop.clone());
        let start = Utc::now()
            .duration_trunc(chrono::Duration::seconds(1))
            .unwrap()
            - chrono::Duration::minutes(20);
        // Not joined: a write may block while no daemon reads the line, and
        // the thread ends with the test process.
        std::thread::spawn(move || {
            let mut fleet = fixgate::sim::Fleet::new(1, (52.0907, 5.1214), seed);
            let mut epoch = 0i64;
            while !stop_in.load(Ordering::Relaxed) {
                let mut text = String::new();
                for fix in fleet.step(1.0, start + chrono::Duration::seconds(epoch)) {
                    fixgate::sim::nmea::write_epoch(&fix, &mut text);
                }
                epoch += 1;
                let (speed, rate) = (pty.line_speed(), rate_in.load(Ordering::Relaxed));
                if speed == rate {
                    pty.send(text.as_bytes());
                } else {
                    pty.send(&uart_at(text.as_bytes(), rate, speed));
                }
                std::thread::sleep(every);
            }
        });
        Talker { rate, stop }
    }

    pub fn set_rate(&self, rate: u32) {
        self.rate.store(rate, Ordering::Relaxed);
    }
}

impl Drop for Talker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
