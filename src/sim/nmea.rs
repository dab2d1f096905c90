//! Writes a fix as the NMEA 0183 sentences a typical u-blox receiver sends per
//! epoch (RMC, VTG, GGA, GSA, GLL), for the demo and simulators.

use std::fmt::Write;

use chrono::{Datelike, Timelike};

use crate::fix::{Fix, FixMode};

/// Knots per metre per second.
const KNOTS_PER_MPS: f64 = 1.943_844_5;

/// Appends one epoch's sentences, each ending in CRLF.
pub fn write_epoch(fix: &Fix, out: &mut String) {
    let t = fix.time;
    let time = format!(
        "{:02}{:02}{:02}.{:02}",
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis() / 10
    );
    let date = format!("{:02}{:02}{:02}", t.day(), t.month(), t.year() % 100);
    let (lat, ns) = angle(fix.lat, 2, 'N', 'S');
    let (lon, ew) = angle(fix.lon, 3, 'E', 'W');
    let knots = fix
        .speed
        .map(|s| format!("{:.3}", s * KNOTS_PER_MPS))
        .unwrap_or_default();
    let course = fix.course.map(|c| format!("{c:.2}")).unwrap_or_default();
    let kmh = fix
        .speed
        .map(|s| format!("{:.3}", s * 3.6))
        .unwrap_or_default();
    let hdop = fix.hdop.map(|h| format!("{h:.2}")).unwrap_or_default();
    let alt = fix.alt.map(|a| format!("{a:.1}")).unwrap_or_default();
    let sats = fix.sats.unwrap_or(0);
    let mode = match fix.mode {
        Some(FixMode::TwoD) => 2,
        _ => 3,
    };
    let prns: Vec<String> = (1..=12)
        .map(|i| {
            if i <= sats {
                format!("{:02}", i * 2)
            } else {
                String::new()
            }
        })
        .collect();
    sentence(
        out,
        &format!("GPRMC,{time},A,{lat},{ns},{lon},{ew},{knots},{course},{date},,,A"),
    );
    sentence(out, &format!("GPVTG,{course},T,,M,{knots},N,{kmh},K,A"));
    sentence(
        out,
        &format!("GPGGA,{time},{lat},{ns},{lon},{ew},1,{sats:02},{hdop},{alt},M,46.0,M,,"),
    );
    sentence(out, &format!("GPGSA,A,{mode},{},,{hdop},", prns.join(",")));
    sentence(out, &format!("GPGLL,{lat},{ns},{lon},{ew},{time},A,A"));
}

/// Degrees as NMEA `(d)ddmm.mmmmm` and a hemisphere letter.
fn angle(deg: f64, width: usize, pos: char, neg: char) -> (String, char) {
    let hemi = if deg < 0.0 { neg } else { pos };
    let abs = deg.abs();
    let mut whole = abs.trunc();
    let mut minutes = ((abs - whole) * 60.0 * 1e5).round() / 1e5;
    if minutes >= 60.0 {
        whole += 1.0;
        minutes -= 60.0;
    }
    (format!("{:0width$}{:08.5}", whole as u32, minutes), hemi)
}

/// Appends `$body*CS\r\n`.
pub(crate) fn sentence(out: &mut String, body: &str) {
    let checksum = body.bytes().fold(0u8, |acc, b| acc ^ b);
    let _ = write!(out, "${body}*{checksum:02X}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn writes_checksummed_sentences_in_nmea_units() {
        let fix = Fix {
            time: Utc.with_ymd_and_hms(2026, 11, 23, 8, 5, 9).unwrap()
                + chrono::Duration::milliseconds(250),
            lat: 52.090_7,
            lon: -5.121_4,
            alt: Some(12.34),
            speed: Some(10.0),
            course: Some(271.5),
            hdop: Some(0.9),
            sats: Some(9),
            mode: Some(FixMode::ThreeD),
            accuracy: None,
        };
        let mut out = String::new();
        write_epoch(&fix, &mut out);
        let lines: Vec<&str> = out.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with(
            "$GPRMC,080509.25,A,5205.44200,N,00507.28400,W,19.438,271.50,231126,,,A*"
        ));
        assert!(lines[2].contains(",1,09,0.90,12.3,M,"));
        for line in lines {
            let (body, cs) = line[1..].split_once('*').unwrap();
            let x = body.bytes().fold(0u8, |a, b| a ^ b);
            assert_eq!(format!("{x:02X}"), cs);
        }
    }

    #[test]
    fn minutes_never_round_up_to_sixty() {
        assert_eq!(angle(4.999_999_999, 2, 'N', 'S').0, "0500.00000");
    }
}
