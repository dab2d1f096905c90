//! gpsd's JSON protocol as plain values: the requests a client sends
//! (`?VERSION;`, `?DEVICES;`, `?WATCH={...};`, `?POLL;`, `?DEVICE;`) and the
//! objects the server answers with (`VERSION`, `DEVICES`/`DEVICE`, `WATCH`,
//! `TPV`, `SKY`, `POLL`, `ERROR`), with gpsd's field names and units
//! (gpsd_json(5), protocol 3.14 as gpsd 3.22 speaks it). No I/O here.
//!
//! What a stored fix holds decides what is reported; nothing is made up:
//!
//! * `TPV`: `mode`, `time`, `lat`, `lon`, `altMSL` and `alt` (the same value,
//!   as gpsd 3.22 still sends the deprecated `alt`) in a 3D fix, `track`,
//!   `speed` (m/s), and `eph` only where the device reported a horizontal
//!   accuracy in metres (trackers). Left out: `altHAE` and `geoidSep` (the
//!   store keeps the altitude above mean sea level only), `ept`, `epx`,
//!   `epy`, `epv`, `eps`, `epc` (gpsd estimates them from DOPs and a
//!   receiver model; the store has no DOP but HDOP), `climb`, `magtrack`,
//!   `magvar` and `status`.
//! * `SKY`, sent only for a fix with an HDOP or a count of satellites used:
//!   `hdop` and `uSat`. Left out: the other DOPs, `nSat` and `satellites`
//!   (the store does not keep the satellites in view).
//!
//! Lines end in CR LF, as gpsd's do (the Python client checks for it).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::fix::{Fix, FixMode};

/// gpsd's protocol version this server speaks (gpsd 3.22's). Clients check
/// the major number.
pub const PROTO_MAJOR: u32 = 3;
/// The minor number that goes with [`PROTO_MAJOR`].
pub const PROTO_MINOR: u32 = 14;
/// The longest request line kept, without its newline. gpsd's protocol
/// allows 80 characters; a little more is taken, and a longer line is
/// answered with an ERROR and thrown away, never buffered whole.
pub const MAX_LINE: usize = 1024;
/// Characters of a client's request an ERROR object quotes back.
const QUOTED: usize = 80;

/// One request of a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `?VERSION;`
    Version,
    /// `?DEVICES;`
    Devices,
    /// `?DEVICE;`: the first device served (configuring one is refused).
    Device,
    /// `?WATCH;` (report the policy) or `?WATCH={...};` (change it).
    Watch(Option<WatchChange>),
    /// `?POLL;`
    Poll,
    /// Something answered with an ERROR object.
    Bad(Refusal),
}

/// Why a request is answered with an ERROR object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a request this server knows (the text from the `?` on).
    Unrecognized(String),
    /// A `?WATCH=` whose argument is not what gpsd takes.
    InvalidWatch(String),
    /// `?DEVICE={...}`: fixgate does not configure receivers for clients.
    DeviceConfig,
    /// A line longer than [`MAX_LINE`].
    TooLong,
    /// `?WATCH` for a device that is not served.
    NoSuchDevice(String),
}

impl Refusal {
    /// The ERROR object's message.
    pub fn message(&self) -> String {
        match self {
            Self::Unrecognized(text) => format!("Unrecognized request '{}'", quoted(text)),
            Self::InvalidWatch(why) => format!("Invalid WATCH: {why}"),
            Self::DeviceConfig => "Can't configure a device: fixgate does not".to_owned(),
            Self::TooLong => format!("Request longer than {MAX_LINE} characters"),
            Self::NoSuchDevice(path) => format!("No such device as {}", quoted(path)),
        }
    }

    /// A bounded label for the metric of bad requests.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unrecognized(_) => "unrecognized",
            Self::InvalidWatch(_) => "invalid_watch",
            Self::DeviceConfig => "device_config",
            Self::TooLong => "too_long",
            Self::NoSuchDevice(_) => "no_such_device",
        }
    }
}

/// At most [`QUOTED`] characters of a client's text.
fn quoted(text: &str) -> String {
    text.chars().take(QUOTED).collect()
}

/// What a `?WATCH={...}` sets; what it does not name stays as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchChange {
    /// `enable`
    pub enable: Option<bool>,
    /// `json`
    pub json: Option<bool>,
    /// `nmea`
    pub nmea: Option<bool>,
    /// `raw` (0, 1 or 2)
    pub raw: Option<u8>,
    /// `scaled`
    pub scaled: Option<bool>,
    /// `timing`
    pub timing: Option<bool>,
    /// `split24`
    pub split24: Option<bool>,
    /// `pps`
    pub pps: Option<bool>,
    /// `device`: only this device's reports.
    pub device: Option<String>,
}

/// A client's watch policy, as the WATCH object reports it. Only `enable`
/// with `json` streams anything here: NMEA and raw output need the
/// receiver's own sentences, which the store does not keep; `scaled`,
/// `timing`, `split24` and `pps` change nothing fixgate sends. They are
/// kept and reported so that a client sees what it asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watch {
    /// Streaming on.
    pub enable: bool,
    /// TPV and SKY objects.
    pub json: bool,
    /// NMEA sentences (not provided).
    pub nmea: bool,
    /// Raw data (not provided).
    pub raw: u8,
    /// Scaled AIS and subframe values (none here).
    pub scaled: bool,
    /// Timing information (none here).
    pub timing: bool,
    /// AIS type 24 handling (none here).
    pub split24: bool,
    /// PPS objects (none here).
    pub pps: bool,
    /// Only this device's reports.
    pub device: Option<String>,
}

impl Watch {
    /// The policy after `change`.
    pub fn apply(&mut self, change: &WatchChange) {
        let flags = [
            (&mut self.enable, change.enable),
            (&mut self.json, change.json),
            (&mut self.nmea, change.nmea),
            (&mut self.scaled, change.scaled),
            (&mut self.timing, change.timing),
            (&mut self.split24, change.split24),
            (&mut self.pps, change.pps),
        ];
        for (flag, new) in flags {
            if let Some(v) = new {
                *flag = v;
            }
        }
        if let Some(raw) = change.raw {
            self.raw = raw;
        }
        if let Some(device) = &change.device {
            self.device = Some(device.clone());
        }
    }

    /// Whether TPV and SKY reports go to the client.
    pub fn streams(&self) -> bool {
        self.enable && self.json
    }
}

/// Splits a client's bytes into request lines, however they arrive: a
/// request split over several reads waits for the rest, several lines in
/// one read come out one by one. Holds at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
    /// The line being read grew past the limit: drop it up to its end.
    discarding: bool,
}

/// One line of a client's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A whole line, without its line ending.
    Text(String),
    /// A line longer than [`MAX_LINE`], thrown away.
    TooLong,
}

impl Lines {
    /// Takes `bytes` in and returns the lines they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.discarding {
                    self.discarding = false;
                } else {
                    let text = String::from_utf8_lossy(&self.partial);
                    out.push(Line::Text(text.trim_end_matches('\r').to_owned()));
                }
                self.partial.clear();
            } else if !self.discarding {
                if self.partial.len() == MAX_LINE {
                    self.partial.clear();
                    self.discarding = true;
                    out.push(Line::TooLong);
                } else {
                    self.partial.push(b);
                }
            }
        }
        out
    }
}

/// The requests in one line: several may follow each other (`?VERSION;?POLL;`).
/// A line that does not start with `?` is not a request and is ignored, as
/// gpsd does; text after the requests that is none is refused.
pub fn parse_line(line: &str) -> Vec<Request> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return out;
        }
        let Some(body) = rest.strip_prefix('?') else {
            if !out.is_empty() {
                out.push(Request::Bad(Refusal::Unrecognized(rest.to_owned())));
            }
            return out;
        };
        let name_len = body.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (name, after) = body.split_at(name_len);
        if let Some(next) = after.strip_prefix(';') {
            out.push(request(name, None, rest));
            rest = next;
        } else if let Some(json) = after.strip_prefix('=') {
            let mut values = serde_json::Deserializer::from_str(json).into_iter::<Value>();
            match values.next() {
                Some(Ok(value)) => {
                    let end = values.byte_offset();
                    out.push(request(name, Some(value), rest));
                    rest = &json[end..];
                }
                _ => {
                    out.push(match name {
                        "WATCH" => Request::Bad(Refusal::InvalidWatch("not a JSON object".into())),
                        _ => Request::Bad(Refusal::Unrecognized(rest.to_owned())),
                    });
                    return out;
                }
            }
        } else {
            out.push(Request::Bad(Refusal::Unrecognized(rest.to_owned())));
            return out;
        }
    }
}

/// The request `?name` with its argument; `text` is the request as sent.
fn request(name: &str, arg: Option<Value>, text: &str) -> Request {
    match (name, arg) {
        ("VERSION", _) => Request::Version,
        ("DEVICES", _) => Request::Devices,
        ("POLL", _) => Request::Poll,
        ("DEVICE", None) => Request::Device,
        ("DEVICE", Some(_)) => Request::Bad(Refusal::DeviceConfig),
        ("WATCH", None) => Request::Watch(None),
        ("WATCH", Some(arg)) => match watch_change(&arg) {
            Ok(change) => Request::Watch(Some(change)),
            Err(why) => Request::Bad(Refusal::InvalidWatch(why)),
        },
        _ => {
            let end = text.find(';').map_or(text.len(), |i| i + 1);
            Request::Bad(Refusal::Unrecognized(text[..end].to_owned()))
        }
    }
}

/// Reads a `?WATCH=` argument. Attributes gpsd knows of that change nothing
/// here, and unknown ones, are ignored, as gpsd ignores them.
fn watch_change(arg: &Value) -> Result<WatchChange, String> {
    let Value::Object(map) = arg else {
        return Err("the argument must be a JSON object".into());
    };
    let flag = |key: &str| -> Result<Option<bool>, String> {
        match map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("\"{key}\" must be true or false")),
        }
    };
    let raw = match map.get("raw") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n @ 0..=2) => Some(n as u8),
            _ => return Err("\"raw\" must be 0, 1 or 2".into()),
        },
    };
    let device = match map.get("device") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("\"device\" must be a string".into()),
    };
    Ok(WatchChange {
        enable: flag("enable")?,
        json: flag("json")?,
        nmea: flag("nmea")?,
        raw,
        scaled: flag("scaled")?,
        timing: flag("timing")?,
        split24: flag("split24")?,
        pps: flag("pps")?,
        device,
    })
}

/// A device as DEVICE objects describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo<'a> {
    /// gpsd's `path`: the serial port, the replayed file, or the device id.
    pub path: &'a str,
    /// `driver`, when known (`NMEA0183` for the NMEA receivers).
    pub driver: Option<&'a str>,
    /// `activated`: when its first report of this run came; `None` before.
    pub activated: Option<DateTime<Utc>>,
    /// `bps` of a serial port, with `parity` and `stopbits` (8N1).
    pub bps: Option<u32>,
}

/// A JSON string literal.
fn string(s: &str) -> String {
    // A `&str` always serialises; the fallback is never taken.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// ISO 8601 UTC with milliseconds, as gpsd writes times.
pub fn iso_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Writes `,"name":value` with `decimals` places, for a finite value.
fn number(out: &mut String, name: &str, value: Option<f64>, decimals: usize) {
    if let Some(v) = value.filter(|v| v.is_finite()) {
        let _ = write!(out, ",\"{name}\":{v:.decimals$}");
    }
}

/// The greeting and the answer to `?VERSION;`.
pub fn version(release: &str) -> String {
    format!(
        "{{\"class\":\"VERSION\",\"release\":{},\"rev\":{},\"proto_major\":{PROTO_MAJOR},\"proto_minor\":{PROTO_MINOR}}}",
        string(release),
        string(release)
    )
}

/// A DEVICE object.
pub fn device(d: &DeviceInfo<'_>) -> String {
    let mut out = format!("{{\"class\":\"DEVICE\",\"path\":{}", string(d.path));
    if let Some(driver) = d.driver {
        let _ = write!(out, ",\"driver\":{}", string(driver));
    }
    if let Some(t) = d.activated {
        // flags 1: gpsd's SEEN_GPS, the device has sent position data.
        let _ = write!(out, ",\"activated\":\"{}\",\"flags\":1", iso_time(t));
    }
    if let Some(bps) = d.bps {
        let _ = write!(
            out,
            ",\"native\":0,\"bps\":{bps},\"parity\":\"N\",\"stopbits\":1"
        );
    }
    out.push('}');
    out
}

/// A DEVICES object listing `devices`.
pub fn devices(devices: &[DeviceInfo<'_>]) -> String {
    let list: Vec<String> = devices.iter().map(device).collect();
    format!("{{\"class\":\"DEVICES\",\"devices\":[{}]}}", list.join(","))
}

/// The WATCH object reporting `w`.
pub fn watch(w: &Watch) -> String {
    let mut out = format!(
        "{{\"class\":\"WATCH\",\"enable\":{},\"json\":{},\"nmea\":{},\"raw\":{},\"scaled\":{},\"timing\":{},\"split24\":{},\"pps\":{}",
        w.enable, w.json, w.nmea, w.raw, w.scaled, w.timing, w.split24, w.pps
    );
    if let Some(d) = &w.device {
        let _ = write!(out, ",\"device\":{}", string(d));
    }
    out.push('}');
    out
}

/// gpsd's mode of a stored fix: the one it was stored with, else 3 when it
/// has an altitude and 2 when not.
pub fn mode(fix: &Fix) -> u8 {
    match fix.mode {
        Some(FixMode::TwoD) => 2,
        Some(FixMode::ThreeD) => 3,
        None if fix.alt.is_some() => 3,
        None => 2,
    }
}

/// The TPV object of a stored fix of the device at `path`.
pub fn tpv(path: &str, fix: &Fix) -> String {
    let mode = mode(fix);
    let mut out = format!(
        "{{\"class\":\"TPV\",\"device\":{},\"mode\":{mode},\"time\":\"{}\"",
        string(path),
        iso_time(fix.time)
    );
    number(&mut out, "lat", Some(fix.lat), 9);
    number(&mut out, "lon", Some(fix.lon), 9);
    if mode == 3 {
        number(&mut out, "altMSL", fix.alt, 4);
        number(&mut out, "alt", fix.alt, 4);
    }
    number(&mut out, "track", fix.course, 4);
    number(&mut out, "speed", fix.speed, 3);
    number(&mut out, "eph", fix.accuracy, 3);
    out.push('}');
    out
}

/// The SKY object of a stored fix, when it has anything SKY reports.
pub fn sky(path: &str, fix: &Fix) -> Option<String> {
    if fix.hdop.is_none() && fix.sats.is_none() {
        return None;
    }
    let mut out = format!(
        "{{\"class\":\"SKY\",\"device\":{},\"time\":\"{}\"",
        string(path),
        iso_time(fix.time)
    );
    number(&mut out, "hdop", fix.hdop, 2);
    if let Some(n) = fix.sats {
        let _ = write!(out, ",\"uSat\":{n}");
    }
    out.push('}');
    Some(out)
}

/// The POLL object: the latest TPV and SKY objects (already rendered) of
/// the `active` devices, at `now`.
pub fn poll(now: DateTime<Utc>, active: usize, tpvs: &[&str], skys: &[&str]) -> String {
    format!(
        "{{\"class\":\"POLL\",\"time\":\"{}\",\"active\":{active},\"tpv\":[{}],\"sky\":[{}]}}",
        iso_time(now),
        tpvs.join(","),
        skys.join(",")
    )
}

/// The ERROR object for `refusal`.
pub fn error(refusal: &Refusal) -> String {
    format!(
        "{{\"class\":\"ERROR\",\"message\":{}}}",
        string(&refusal.message())
    )
}

#[cfg(test)]
mod tests;
