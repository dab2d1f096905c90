//! A batch as the columns the landing statements take: one array per
//! column, so that each table gets one multi-row `INSERT … SELECT FROM
//! unnest(…)` per batch. Pure: no I/O. Refuses what the database cannot
//! hold or the receiver cannot trust.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Utc};

use crate::fix::{Event, FixMode, Position};
use crate::receive::dedupe::{self, Inconsistent};
use crate::wire::Batch;

/// Why a batch is refused before any database work: sending it again
/// cannot help, so it is acknowledged and counted, and nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadInput {
    /// The batch contradicts itself ([`dedupe::check`]).
    #[error("inconsistent batch: {0}")]
    Inconsistent(#[from] Inconsistent),
    /// A sequence number the database's `bigint` cannot hold. (`i64::MAX`
    /// itself is refused too when it is the batch's last covered number:
    /// the coverage range would end one past it.)
    #[error("sequence number {0} is above {max}", max = i64::MAX)]
    SeqTooLarge(u64),
}

impl BadInput {
    /// The label of `fixgate_receive_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Inconsistent(_) => "inconsistent",
            Self::SeqTooLarge(_) => "seq_range",
        }
    }
}

/// Positions, column by column.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FixRows {
    pub seq: Vec<i64>,
    pub device: Vec<String>,
    pub time: Vec<DateTime<Utc>>,
    pub lat: Vec<f64>,
    pub lon: Vec<f64>,
    pub alt: Vec<Option<f64>>,
    pub speed: Vec<Option<f64>>,
    pub course: Vec<Option<f64>>,
    pub hdop: Vec<Option<f64>>,
    pub sats: Vec<Option<i32>>,
    pub mode: Vec<Option<String>>,
    pub accuracy: Vec<Option<f64>>,
    pub historic: Vec<bool>,
}

impl FixRows {
    fn push(&mut self, seq: i64, p: &Position) {
        let f = &p.fix;
        self.seq.push(seq);
        self.device.push(p.device.as_str().to_owned());
        self.time.push(f.time);
        self.lat.push(f.lat);
        self.lon.push(f.lon);
        self.alt.push(f.alt);
        self.speed.push(f.speed);
        self.course.push(f.course);
        self.hdop.push(f.hdop);
        self.sats.push(f.sats.map(i32::from));
        self.mode.push(f.mode.map(mode_name));
        self.accuracy.push(f.accuracy);
        self.historic.push(p.historic);
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }
}

/// Status and geofence events, column by column.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EventRows {
    pub seq: Vec<i64>,
    pub device: Vec<String>,
    pub time: Vec<DateTime<Utc>>,
    pub kind: Vec<String>,
    /// The record's JSON line (fixgate-wire's `record_json`).
    pub data: Vec<String>,
    pub lat: Vec<Option<f64>>,
    pub lon: Vec<Option<f64>>,
}

impl EventRows {
    /// How many rows.
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }
}

/// Everything one batch writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// `fixgate.fix`.
    pub fixes: FixRows,
    /// `fixgate.event`.
    pub events: EventRows,
    /// The non-historic positions, candidates for `fixgate.latest`.
    pub live: FixRows,
    /// The numbers the batch accounts for, as inclusive ranges (starts, ends).
    pub covered: (Vec<i64>, Vec<i64>),
    /// The months (UTC) the positions fall in: their partitions must exist.
    pub months: BTreeSet<Month>,
    /// The batch's id, when a `bigint` holds it (it only names the batch).
    pub batch: Option<i64>,
}

impl Rows {
    /// Records in the batch.
    pub fn records(&self) -> usize {
        self.fixes.len() + self.events.len()
    }
}

/// A calendar month of UTC: the unit of `fixgate.fix`'s partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl Month {
    /// The month `time` falls in.
    pub fn of(time: &DateTime<Utc>) -> Self {
        Self {
            year: time.year(),
            month: time.month(),
        }
    }

    /// The partition's table name, `fix_yYYYYmMM` (schema `fixgate`).
    pub fn table(self) -> String {
        format!("fix_y{:04}m{:02}", self.year, self.month)
    }

    /// Its first instant, as a timestamptz literal.
    pub fn start(self) -> String {
        format!("{:04}-{:02}-01 00:00:00+00", self.year, self.month)
    }

    /// The first instant of the next month, as a timestamptz literal.
    pub fn end(self) -> String {
        let next = if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        };
        next.start()
    }

    /// A number unique to the month (`YYYYMM`): the key of its creation lock.
    pub fn key(self) -> i32 {
        self.year * 100 + self.month as i32
    }
}

fn mode_name(mode: FixMode) -> String {
    match mode {
        FixMode::TwoD => "2d",
        FixMode::ThreeD => "3d",
    }
    .to_owned()
}

fn seq(value: u64) -> Result<i64, BadInput> {
    i64::try_from(value).map_err(|_| BadInput::SeqTooLarge(value))
}

/// Checks `batch` and splits it into the columns of each table.
pub fn rows(batch: &Batch) -> Result<Rows, BadInput> {
    dedupe::check(batch)?;
    // Every record lies within the range, so checking its ends checks all;
    // the coverage range's exclusive end must fit too.
    seq(batch.first_seq)?;
    if batch.last_seq >= i64::MAX as u64 {
        return Err(BadInput::SeqTooLarge(batch.last_seq));
    }
    let mut fixes = FixRows::default();
    let mut live = FixRows::default();
    let mut events = EventRows::default();
    let mut months = BTreeSet::new();
    for record in &batch.records {
        let seq = seq(record.seq)?;
        match &record.event {
            Event::Position(p) => {
                fixes.push(seq, p);
                months.insert(Month::of(&p.fix.time));
                if !p.historic {
                    live.push(seq, p);
                }
            }
            other => {
                let (lat, lon) = match other {
                    Event::Geofence(g) => (Some(g.lat), Some(g.lon)),
                    _ => (None, None),
                };
                events.seq.push(seq);
                events.device.push(other.device().as_str().to_owned());
                events.time.push(other.time());
                events.kind.push(other.name().to_owned());
                events
                    .data
                    .push(crate::wire::record_json(&batch.gateway, record));
                events.lat.push(lat);
                events.lon.push(lon);
            }
        }
    }
    let mut covered = (Vec::new(), Vec::new());
    for range in dedupe::covered(batch) {
        covered.0.push(seq(*range.start())?);
        covered.1.push(seq(*range.end())?);
    }
    Ok(Rows {
        fixes,
        events,
        live,
        covered,
        months,
        batch: i64::try_from(batch.id).ok(),
    })
}
