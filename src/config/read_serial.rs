//! `[[serial]]`: an NMEA receiver on a serial port, at a fixed line speed or
//! one hunted for (`baud = "auto"`).

use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;

use super::{Reader, Section, Value, a};
use crate::config::{Hunt, Serial};

pub(super) const SERIAL_KEYS: &[&str] = &[
    "device",
    "path",
    "baud",
    "hunt_rates",
    "hunt_window",
    "silence_timeout",
    "reconnect_min",
    "reconnect_max",
    "chrony_socket",
];

/// Longest accepted back-off and the longest sensible `reconnect_*`: an hour
/// without trying to reopen a receiver is already a long outage.
const RECONNECT_LIMIT: Duration = Duration::from_secs(3600);

/// A window below this cannot hold a sentence at the slow rates; above a
/// minute, a round over the rates takes longer than anyone waits.
const HUNT_WINDOWS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(60);

/// What `baud` asks for, once read.
enum Baud {
    /// A standard rate (or the default, when `baud` is not written).
    Fixed(u32),
    /// `"auto"`.
    Auto,
    /// A value that was reported as wrong.
    Bad,
}

impl Reader<'_> {
    pub(super) fn serial(&mut self, s: &Section<'_, '_>) -> Option<Serial> {
        // Every key is checked before giving up on a missing one, so that a
        // missing `device` does not hide a bad `baud` in the same table.
        let device = self.required_device(s);
        let path = self.required_path(s);
        let (baud, hunt) = self.line_speed(s);
        let silence = Duration::from_secs(1)..=Duration::from_secs(3600);
        let silence_timeout = self
            .duration(s, "silence_timeout", silence)
            .map_or(Serial::DEFAULT_SILENCE_TIMEOUT, |(d, _)| d);
        let (reconnect_min, reconnect_max) = self.reconnect(s);
        let chrony_socket = self.chrony_socket(s);
        Some(Serial {
            device: device?,
            path: path?,
            baud,
            hunt,
            silence_timeout,
            reconnect_min,
            reconnect_max,
            chrony_socket,
        })
    }

    /// `reconnect_min` and `reconnect_max`, in order.
    fn reconnect(&mut self, s: &Section<'_, '_>) -> (Duration, Duration) {
        // A zero back-off turns an unplugged receiver into a busy loop.
        let back_off = Duration::from_millis(10)..=RECONNECT_LIMIT;
        let min = self.duration(s, "reconnect_min", back_off.clone());
        let max = self.duration(s, "reconnect_max", back_off);
        let reconnect_min = min
            .as_ref()
            .map_or(Serial::DEFAULT_RECONNECT_MIN, |(d, _)| *d);
        let reconnect_max = max
            .as_ref()
            .map_or(Serial::DEFAULT_RECONNECT_MAX, |(d, _)| *d);
        if reconnect_max < reconnect_min {
            let min_text = humantime::format_duration(reconnect_min);
            let max_text = humantime::format_duration(reconnect_max);
            match (&min, &max) {
                (_, Some((_, span))) => self.report(
                    span,
                    format!(
                        "{} ({max_text}) must not be less than {} ({min_text})",
                        s.key("reconnect_max"),
                        s.key("reconnect_min")
                    ),
                ),
                (Some((_, span)), None) => self.report(
                    span,
                    format!(
                        "{} ({min_text}) is more than the default {} ({max_text}); raise that too",
                        s.key("reconnect_min"),
                        s.key("reconnect_max")
                    ),
                ),
                // Both defaults: they are in order, so this cannot be reached.
                (None, None) => {}
            }
        }
        (reconnect_min, reconnect_max)
    }

    /// `baud`, `hunt_rates` and `hunt_window`: the fixed rate, or the rate a
    /// hunt starts from and the hunt.
    fn line_speed(&mut self, s: &Section<'_, '_>) -> (u32, Option<Hunt>) {
        let baud = self.baud(s);
        let rates = self.hunt_rates(s);
        let window = self.duration(s, "hunt_window", HUNT_WINDOWS);
        match baud {
            Baud::Auto => {
                let mut hunt = Hunt::new();
                if let Some(rates) = rates {
                    hunt.rates = rates;
                }
                if let Some((window, _)) = window {
                    hunt.window = window;
                }
                let first = hunt.rates.first().copied();
                (first.unwrap_or(Serial::DEFAULT_BAUD), Some(hunt))
            }
            Baud::Fixed(rate) => {
                // Set beside a fixed rate they would do nothing: say so
                // rather than let the operator believe the port is hunted.
                for key in ["hunt_rates", "hunt_window"] {
                    if let Some(value) = s.get(key) {
                        self.report(
                            &value.span(),
                            format!(
                                "{} applies only with {} = \"auto\"",
                                s.key(key),
                                s.key("baud")
                            ),
                        );
                    }
                }
                (rate, None)
            }
            Baud::Bad => (Serial::DEFAULT_BAUD, None),
        }
    }

    fn baud(&mut self, s: &Section<'_, '_>) -> Baud {
        let Some(value) = s.get("baud") else {
            return Baud::Fixed(Serial::DEFAULT_BAUD);
        };
        match value.get_ref() {
            DeValue::String(text) if text.as_ref() == "auto" => Baud::Auto,
            DeValue::String(text) => {
                let text = text.to_string();
                self.report(
                    &value.span(),
                    format!(
                        "{} must be a standard rate like 9600 or \"auto\", not {text:?}",
                        s.key("baud")
                    ),
                );
                Baud::Bad
            }
            DeValue::Integer(_) => match self.rate(s, "baud", value) {
                Some(rate) => Baud::Fixed(rate),
                None => Baud::Bad,
            },
            other => {
                self.report(
                    &value.span(),
                    format!(
                        "{} must be a standard rate like 9600 or \"auto\", not {}",
                        s.key("baud"),
                        a(other.type_str())
                    ),
                );
                Baud::Bad
            }
        }
    }

    /// One line speed written at `value`: one of [`Serial::BAUD_RATES`].
    fn rate(&mut self, s: &Section<'_, '_>, key: &str, value: &Value<'_>) -> Option<u32> {
        let rate = value
            .get_ref()
            .as_integer()
            .and_then(|int| i64::from_str_radix(int.as_str(), int.radix()).ok());
        let Some(rate) = rate else {
            self.report(
                &value.span(),
                format!(
                    "{} must be an integer, not {}",
                    s.key(key),
                    a(value.get_ref().type_str())
                ),
            );
            return None;
        };
        if let Some(rate) = u32::try_from(rate)
            .ok()
            .filter(|r| Serial::BAUD_RATES.contains(r))
        {
            return Some(rate);
        }
        let rates: Vec<String> = Serial::BAUD_RATES.iter().map(u32::to_string).collect();
        self.report(
            &value.span(),
            format!(
                "{} {rate} is not a standard rate; use one of {}",
                s.key(key),
                rates.join(", ")
            ),
        );
        None
    }

    /// `hunt_rates`: a non-empty list of standard rates, none twice.
    fn hunt_rates(&mut self, s: &Section<'_, '_>) -> Option<Vec<u32>> {
        let value = s.get("hunt_rates")?;
        let DeValue::Array(items) = value.get_ref() else {
            self.report(
                &value.span(),
                format!(
                    "{} must be a list of rates like [9600, 38400], not {}",
                    s.key("hunt_rates"),
                    a(value.get_ref().type_str())
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.report(
                &value.span(),
                format!("{} must list at least one rate", s.key("hunt_rates")),
            );
            return None;
        }
        let mut rates = Vec::with_capacity(items.len());
        let mut bad = false;
        for item in items.iter() {
            match self.rate(s, "hunt_rates", item) {
                Some(rate) if rates.contains(&rate) => {
                    self.report(
                        &Spanned::span(item),
                        format!("{} lists {rate} twice", s.key("hunt_rates")),
                    );
                    bad = true;
                }
                Some(rate) => rates.push(rate),
                None => bad = true,
            }
        }
        (!bad).then_some(rates)
    }
}
