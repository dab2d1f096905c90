//! Tests of the whole codec: round trips, hostile input, the worked example
//! of `docs/wire-format.md`, and the crate's purity.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::fix::{Crossing, DeviceId, FenceId, Fix, FixMode, Geofence, Position, Presence, Status};

/// The files of this crate, as the compiler sees them.
const SOURCES: [(&str, &str); 13] = [
    ("body.rs", include_str!("body.rs")),
    ("fix.rs", include_str!("fix.rs")),
    ("header.rs", include_str!("header.rs")),
    ("json.rs", include_str!("json.rs")),
    ("lib.rs", include_str!("lib.rs")),
    ("lzma.rs", include_str!("lzma.rs")),
    ("predict.rs", include_str!("predict.rs")),
    ("quantise.rs", include_str!("quantise.rs")),
    ("tests.rs", include_str!("tests.rs")),
    ("tools.rs", include_str!("tools.rs")),
    ("units.rs", include_str!("units.rs")),
    ("zlib.rs", include_str!("zlib.rs")),
    (
        "../docs/wire-format.md",
        include_str!("../docs/wire-format.md"),
    ),
];

#[test]
fn the_module_names_neither_the_async_runtime_nor_the_database() {
    // Spelt in pieces so this file does not trip its own check.
    let banned = [concat!("tok", "io"), concat!("sl", "ed")];
    for (file, text) in &SOURCES[..12] {
        for word in banned {
            assert!(
                !text.contains(word),
                "src/{file} mentions {word}: the cloud links this crate alone"
            );
        }
    }
    // A new file must join the list above, or it would escape the check.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("src")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = SOURCES[..12].iter().map(|(f, _)| *f).collect();
    assert_eq!(on_disk, listed);
}

fn utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .expect("time in range")
}

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).expect("valid id")
}

/// The worked example of `docs/wire-format.md`.
fn example() -> Batch {
    let t0 = 1_795_435_200_000; // 2026-11-23T12:00:00Z
    let fix = |ms: i64, lat: f64, lon: f64| Fix::new(utc(ms), lat, lon);
    let full = |ms, lat, lon, speed| Fix {
        alt: Some(12.3),
        speed: Some(speed),
        course: Some(359.9),
        hdop: Some(0.9),
        sats: Some(11),
        mode: Some(FixMode::ThreeD),
        ..fix(ms, lat, lon)
    };
    let position = |device: &str, fix: Fix| Event::Position(Position::new(id(device), fix));
    let mut historic = Position::new(
        id("bus-2"),
        Fix {
            accuracy: Some(4.5),
            ..fix(t0 - 60_000, 52.1, 5.2)
        },
    );
    historic.historic = true;
    let records = vec![
        (100, position("bus-1", full(t0, 52.0907123, 5.1214, 8.25))),
        (
            101,
            position("bus-1", full(t0 + 1000, 52.0908, 5.1215, 8.5)),
        ),
        (
            102,
            Event::Status(Status {
                device: id("bus-2"),
                status: Presence::Online,
                time: utc(t0 + 1500),
            }),
        ),
        (103, Event::Position(historic)),
        (
            104,
            position(
                "bus-1",
                Fix {
                    course: Some(0.2),
                    ..full(t0 + 2000, 52.0908877, 5.1216, 8.5)
                },
            ),
        ),
    ];
    Batch {
        gateway: "gw-1".into(),
        id: 7,
        kind: BatchKind::Live,
        first_seq: 100,
        last_seq: 105,
        records: records
            .into_iter()
            .map(|(seq, event)| Record { seq, event })
            .collect(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex digits of the fenced block after `marker` in the spec.
fn hex_in_doc(marker: &str) -> String {
    let doc = SOURCES[12].1;
    let after = &doc[doc
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in the doc"))..];
    let block = after
        .split("```")
        .nth(1)
        .expect("a fenced block after the marker");
    block
        .lines()
        .skip(1)
        .flat_map(|l| l.split('|').next().unwrap_or("").split_whitespace())
        .collect()
}

#[test]
fn the_worked_example_in_the_spec_matches_the_code() {
    let batch = example();
    batch.check().expect("example is valid");
    let bytes = encode_as(&batch, VERSION_1);
    let (header, deflated) = header::read(&bytes[1..]).expect("header");
    let body = zlib::inflate(deflated, 1 << 20).expect("inflates");
    let header_len = bytes.len() - deflated.len();
    assert_eq!(
        hex(&bytes[..header_len]),
        hex_in_doc("<!-- example: header -->"),
        "update the header bytes in crates/wire/docs/wire-format.md"
    );
    assert_eq!(
        hex(&body),
        hex_in_doc("<!-- example: body -->"),
        "update the body bytes in crates/wire/docs/wire-format.md"
    );
    assert_eq!(
        hex(&bytes),
        hex_in_doc("<!-- example: batch -->"),
        "update the batch bytes in crates/wire/docs/wire-format.md"
    );
    assert_eq!(header.records, 5);
    let back = decode(&bytes).expect("decodes");
    assert_eq!(back, quantised(&batch));
}

/// The geofence event whose `others` entry `crates/wire/docs/wire-format.md` §8 spells out.
fn geofence_example() -> Batch {
    let t0 = 1_795_435_200_000; // 2026-11-23T12:00:00Z
    let g = Geofence {
        device: id("bus-1"),
        fence: FenceId::new("depot").expect("valid id"),
        crossing: Crossing::Speeding,
        time: utc(t0 + 2000),
        lat: 52.0908877,
        lon: 5.1216,
        speed: Some(14.37),
        limit: Some(8.33),
        since: Some(utc(t0 - 95_000)),
        historic: false,
    };
    Batch {
        records: vec![Record {
            seq: 106,
            event: Event::Geofence(g),
        }],
        first_seq: 106,
        last_seq: 106,
        ..example()
    }
}

#[test]
fn the_geofence_entry_in_the_spec_matches_the_code() {
    let batch = geofence_example();
    let bytes = encode_as(&batch, VERSION_1);
    let (_, deflated) = header::read(&bytes[1..]).expect("header");
    let body = zlib::inflate(deflated, 1 << 20).expect("inflates");
    // The `others` column is last: a count of one, then the entry.
    let entry = hex_in_doc("<!-- example: geofence -->");
    assert!(
        hex(&body).ends_with(&format!("01{entry}")),
        "update the geofence entry in crates/wire/docs/wire-format.md: body {}",
        hex(&body)
    );
    assert_eq!(decode(&bytes).expect("decodes"), quantised(&batch));
    let line = json::record_json(&batch.gateway, &batch.records[0]);
    assert!(
        SOURCES[12].1.contains(&line),
        "update the geofence JSON line in crates/wire/docs/wire-format.md: {line}"
    );
}

/// What decoding should give: the batch at the wire's precision, computed
/// here independently of the codec.
fn quantised(batch: &Batch) -> Batch {
    let q = |v: f64, per: f64| (v * per).round() / per;
    let ms = |t: DateTime<Utc>| utc(t.timestamp_millis());
    let records = batch
        .records
        .iter()
        .map(|r| Record {
            seq: r.seq,
            event: match &r.event {
                Event::Position(p) => Event::Position(Position {
                    device: p.device.clone(),
                    fix: Fix {
                        time: ms(p.fix.time),
                        lat: q(p.fix.lat, 1e7),
                        lon: q(p.fix.lon, 1e7),
                        alt: p.fix.alt.map(|v| q(v, 10.0)),
                        speed: p.fix.speed.map(|v| q(v, 100.0)),
                        course: p.fix.course.map(|v| q(v, 10.0) % 360.0),
                        hdop: p.fix.hdop.map(|v| q(v, 100.0)),
                        sats: p.fix.sats,
                        mode: p.fix.mode,
                        accuracy: p.fix.accuracy.map(|v| q(v, 10.0)),
                    },
                    historic: p.historic,
                }),
                Event::Status(s) => Event::Status(Status {
                    time: ms(s.time),
                    ..s.clone()
                }),
                Event::Geofence(g) => Event::Geofence(Geofence {
                    time: ms(g.time),
                    lat: q(g.lat, 1e7),
                    lon: q(g.lon, 1e7),
                    speed: g.speed.map(|v| q(v, 100.0)),
                    limit: g.limit.map(|v| q(v, 100.0)),
                    since: g.since.map(ms),
                    ..g.clone()
                }),
            },
        })
        .collect();
    Batch {
        records,
        ..batch.clone()
    }
}

/// Within chrono's range, with room for sub-millisecond nanoseconds.
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp_millis() + 1;
    let max = DateTime::<Utc>::MAX_UTC.timestamp_millis() - 1;
    let t2026 = 1_795_435_200_000i64;
    (
        prop_oneof![
            3 => (0i64..10_000).prop_map(move |s| t2026 + s * 1000),
            1 => min..max,
            1 => Just(min),
            1 => Just(max),
        ],
        0i64..1_000_000,
    )
        .prop_map(|(ms, ns)| utc(ms) + chrono::Duration::nanoseconds(ns))
}

/// Degrees within `limit`, the ends included, sometimes near a fixed point
/// so that deltas are small.
fn degrees(limit: f64) -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(limit),
        Just(-limit),
        -limit..=limit,
        (-1e-3..1e-3f64).prop_map(|d| 52.09 + d),
    ]
}

fn any_fix() -> impl Strategy<Value = Fix> {
    let mode = prop_oneof![
        Just(None),
        Just(Some(FixMode::TwoD)),
        Just(Some(FixMode::ThreeD))
    ];
    (
        any_time(),
        degrees(90.0),
        degrees(180.0),
        proptest::option::of(prop_oneof![-2.1e8..2.1e8f64, -1e3..1e4f64]),
        proptest::option::of(prop_oneof![0.0..4.2e7f64, 0.0..50.0f64]),
        proptest::option::of(prop_oneof![Just(360.0), Just(359.96), 0.0..=360.0f64]),
        proptest::option::of(0.0..4.2e7f64),
        proptest::option::of(any::<u8>()),
        mode,
        proptest::option::of(0.0..4.2e8f64),
    )
        .prop_map(
            |(time, lat, lon, alt, speed, course, hdop, sats, mode, accuracy)| Fix {
                time,
                lat,
                lon,
                alt,
                speed,
                course,
                hdop,
                sats,
                mode,
                accuracy,
            },
        )
}

const DEVICES: [&str; 4] = [
    "bus-1",
    "a",
    "x.y:z_9",
    "d123456789012345678901234567890123456789012345678901234567890123",
];

fn any_event() -> impl Strategy<Value = Event> {
    let device = (0..DEVICES.len()).prop_map(|i| id(DEVICES[i]));
    prop_oneof![
        6 => (device.clone(), any_fix(), any::<bool>()).prop_map(|(device, fix, historic)| {
            Event::Position(Position { device, fix, historic })
        }),
        1 => (device.clone(), any::<bool>(), any_time()).prop_map(|(device, online, time)| {
            Event::Status(Status {
                device,
                status: if online { Presence::Online } else { Presence::Offline },
                time,
            })
        }),
        1 => (device, any_geofence()).prop_map(|(device, g)| Event::Geofence(Geofence { device, ..g })),
    ]
}

/// A geofence event of device `a` (the caller sets the device): any
/// crossing, fence, place and time, optional values present or not.
fn any_geofence() -> impl Strategy<Value = Geofence> {
    let crossing = (0u8..4).prop_map(|c| Crossing::from_code(c).expect("defined code"));
    let fence = (0..DEVICES.len()).prop_map(|i| FenceId::new(DEVICES[i]).expect("valid id"));
    let speed = || proptest::option::of(prop_oneof![0.0..4.2e7f64, 0.0..50.0f64]);
    (
        (crossing, fence, any_time(), degrees(90.0), degrees(180.0)),
        (
            speed(),
            speed(),
            proptest::option::of(any_time()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |((crossing, fence, time, lat, lon), (speed, limit, since, historic))| Geofence {
                device: id("a"),
                fence,
                crossing,
                time,
                lat,
                lon,
                speed,
                limit,
                since,
                historic,
            },
        )
}

fn any_batch() -> impl Strategy<Value = Batch> {
    let kind = prop_oneof![
        Just(BatchKind::Live),
        Just(BatchKind::Backlog),
        Just(BatchKind::Snapshot)
    ];
    let start = prop_oneof![0u64..1000, Just(u64::MAX - 10_000_000)];
    let gaps = proptest::collection::vec(
        (
            prop_oneof![8 => Just(1u64), 2 => 1u64..5, 1 => 1u64..100_000],
            any_event(),
        ),
        0..60,
    );
    (
        any::<u64>(),
        kind,
        start,
        0u64..3,
        gaps,
        0u64..3,
        0..DEVICES.len(),
    )
        .prop_map(|(batch_id, kind, first_seq, lead, gaps, tail, gateway)| {
            let mut seq = first_seq + lead;
            let mut records = Vec::new();
            for (i, (gap, event)) in gaps.into_iter().enumerate() {
                if i > 0 {
                    seq += gap;
                }
                records.push(Record { seq, event });
            }
            Batch {
                gateway: DEVICES[gateway].into(),
                id: batch_id,
                kind,
                first_seq,
                last_seq: seq + tail,
                records,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Lossless at the wire's precision, and canonical: the decoded batch
    /// encodes to the same bytes.
    #[test]
    fn random_batches_round_trip_at_wire_precision(batch in any_batch()) {
        prop_assert!(batch.check().is_ok());
        let bytes = encode(&batch);
        let back = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &quantised(&batch));
        prop_assert_eq!(encode(&back), bytes);
    }

    /// Whatever follows a valid header, decoding ends in a batch or an error.
    #[test]
    fn random_bodies_are_errors_or_valid_batches(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        records in 0usize..8,
    ) {
        let bytes = sealed(records, 1, 100, &body);
        if let Ok(batch) = decode(&bytes) {
            prop_assert!(batch.check().is_ok());
        }
    }
}

/// A batch with a valid header around an arbitrary body.
fn sealed(records: usize, first_seq: u64, last_seq: u64, body: &[u8]) -> Vec<u8> {
    let template = Batch {
        gateway: "gw".into(),
        id: 1,
        kind: BatchKind::Live,
        first_seq,
        last_seq,
        records: Vec::new(),
    };
    let mut out = vec![VERSION_1];
    header::write(&template, &mut out);
    // The header ends with the record count (0 here, one byte): replace it.
    out.pop();
    out.extend_from_slice(&postcard::to_stdvec(&(records as u64)).expect("varint"));
    out.extend_from_slice(&zlib::compress(body));
    out
}

/// A body written column by column, bypassing the encoder, behind a valid
/// header: one position of device `a` unless a test changes it.
#[derive(Debug, Clone)]
struct Forge {
    devices: Vec<&'static str>,
    device: Vec<u32>,
    seq: Vec<u64>,
    flags: Vec<u16>,
    values: [Vec<i64>; 9],
    others: Vec<Forged>,
    /// Bytes after the last column.
    tail: Vec<u8>,
    records: usize,
    first_seq: u64,
    last_seq: u64,
}

impl Default for Forge {
    fn default() -> Self {
        let mut values: [Vec<i64>; 9] = Default::default();
        values[0] = vec![1000];
        values[1] = vec![10];
        values[2] = vec![20];
        Self {
            devices: vec!["a"],
            device: vec![0],
            seq: vec![0],
            flags: vec![0],
            values,
            others: Vec::new(),
            tail: Vec::new(),
            records: 1,
            first_seq: 1,
            last_seq: 1,
        }
    }
}

impl Forge {
    /// The default with one change.
    fn changed(change: impl FnOnce(&mut Self)) -> Self {
        let mut forge = Self::default();
        change(&mut forge);
        forge
    }

    /// The same position twice, one seq apart.
    fn twice(mut self) -> Self {
        self.device = vec![0, 0];
        self.seq = vec![0, 1];
        self.flags = vec![0, 0];
        for column in &mut self.values[..3] {
            column.push(0);
        }
        self.records = 2;
        self.last_seq = 2;
        self
    }

    /// A status of variant `variant` at `time` instead of the position.
    fn status(mut self, variant: u32, time: i64) -> Self {
        self.flags = vec![body::flag::OTHER];
        self.values = Default::default();
        self.others = vec![Forged::Status(variant, true, time)];
        self
    }

    /// A geofence event instead of the position: the default of
    /// [`ForgedGeofence`] with one change.
    fn geofence(mut self, change: fn(&mut ForgedGeofence)) -> Self {
        let mut g = ForgedGeofence::default();
        change(&mut g);
        self.flags = vec![body::flag::OTHER];
        self.values = Default::default();
        self.others = vec![Forged::Geofence(1, g)];
        self
    }

    /// The position with optional `field` (a column index) at `residual`.
    fn with(mut self, flag: u16, field: usize, residual: i64) -> Self {
        self.flags[0] |= flag;
        self.values[field] = vec![residual];
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let columns = (
            &self.devices,
            &self.device,
            &self.seq,
            &self.flags,
            &self.values,
            &self.others,
        );
        let mut body = postcard::to_stdvec(&columns).expect("serialises");
        body.extend_from_slice(&self.tail);
        sealed(self.records, self.first_seq, self.last_seq, &body)
    }
}

#[test]
fn a_forged_body_decodes_when_consistent() {
    let mut forge = Forge::default().twice();
    forge.flags[1] = body::flag::OTHER;
    forge.others = vec![Forged::Status(0, true, 5)];
    for column in &mut forge.values[..3] {
        column.pop();
    }
    let batch = decode(&forge.bytes()).expect("consistent body");
    assert_eq!(batch.records.len(), 2);
    let Event::Position(p) = &batch.records[0].event else {
        panic!("{batch:?}")
    };
    assert_eq!((p.fix.lat, p.fix.lon), (1e-6, 2e-6));
    assert!(matches!(&batch.records[1].event, Event::Status(s) if s.status == Presence::Online));
}

/// An entry of a forged `others` column, written as the spec lays it out
/// (variant number, then the fields), independently of the codec's types.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
enum Forged {
    /// Variant, `online`, `time`.
    Status(u32, bool, i64),
    /// Variant and fields.
    Geofence(u32, ForgedGeofence),
}

/// A geofence event's fields in wire order.
#[derive(Debug, Clone, serde::Serialize)]
struct ForgedGeofence {
    fence: &'static str,
    crossing: u8,
    time: i64,
    lat: i64,
    lon: i64,
    speed: Option<u32>,
    limit: Option<u32>,
    since: Option<i64>,
    historic: bool,
}

impl Default for ForgedGeofence {
    /// A `speeding` event of fence `depot`, historic, every value present.
    fn default() -> Self {
        Self {
            fence: "depot",
            crossing: 3,
            time: 1_795_435_200_000,
            lat: 520_907_123,
            lon: -1_213_142_463,
            speed: Some(1437),
            limit: Some(833),
            since: Some(1_795_435_105_000),
            historic: true,
        }
    }
}

#[test]
fn a_forged_geofence_event_decodes_in_the_units_of_the_spec() {
    let batch = decode(&Forge::default().geofence(|_| {}).bytes()).expect("consistent body");
    let [
        Record {
            seq: 1,
            event: Event::Geofence(g),
        },
    ] = &batch.records[..]
    else {
        panic!("{batch:?}")
    };
    assert_eq!(g.device.as_str(), "a");
    assert_eq!(
        (g.fence.as_str(), g.crossing),
        ("depot", Crossing::Speeding)
    );
    assert_eq!((g.lat, g.lon), (52.0907123, -121.3142463));
    assert_eq!((g.speed, g.limit), (Some(14.37), Some(8.33)));
    assert_eq!(g.time, utc(1_795_435_200_000));
    assert_eq!(g.since, Some(utc(1_795_435_105_000)));
    assert!(g.historic);
    // Absent values are absent; every defined crossing decodes.
    for code in 0..4 {
        let mut forge =
            Forge::default().geofence(|g| (g.speed, g.limit, g.since) = (None, None, None));
        if let Forged::Geofence(_, g) = &mut forge.others[0] {
            g.crossing = code;
        }
        let batch = decode(&forge.bytes()).expect("consistent body");
        assert!(matches!(
            &batch.records[0].event,
            Event::Geofence(g) if g.crossing.code() == code && (g.speed, g.limit, g.since) == (None, None, None)
        ));
    }
}

/// Positions, statuses and geofence events of every crossing, with and
/// without their optional values, values to round: decoded at the wire's
/// precision and encoded again to the same bytes.
#[test]
fn a_batch_with_geofence_events_round_trips_at_wire_precision() {
    let mut batch = example();
    let crossings = [
        Crossing::Enter,
        Crossing::Dwell,
        Crossing::Speeding,
        Crossing::Exit,
    ];
    for (i, crossing) in crossings.into_iter().enumerate() {
        let seq = 106 + i as u64;
        let g = Geofence {
            device: id(if i % 2 == 0 { "bus-1" } else { "bus-9" }),
            fence: FenceId::new(["depot", "gate-2"][i % 2]).expect("valid id"),
            crossing,
            time: utc(1_795_435_203_000 + i as i64) + chrono::Duration::nanoseconds(700),
            lat: 52.09071234,
            lon: -179.99999996,
            speed: (crossing == Crossing::Speeding).then_some(14.376),
            limit: (crossing == Crossing::Speeding).then_some(8.333),
            since: (crossing != Crossing::Enter).then(|| utc(1_795_435_100_000)),
            historic: i == 3,
        };
        batch.records.push(Record {
            seq,
            event: Event::Geofence(g),
        });
        batch.last_seq = seq;
    }
    batch.check().expect("valid batch");
    let bytes = encode(&batch);
    let back = decode(&bytes).expect("decodes");
    assert_eq!(back, quantised(&batch));
    assert_eq!(encode(&back), bytes);
    let mut bad = batch.clone();
    if let Event::Geofence(g) = &mut bad.records[5].event {
        g.lat = 90.5;
    }
    assert!(bad.check().is_err(), "check refuses what decode would");
}

#[test]
fn inconsistent_bodies_are_refused_with_a_reason() {
    use body::flag;
    let cases: [(&str, Forge); 27] = [
        ("device index", Forge::changed(|f| f.device = vec![1])),
        ("bad device id", Forge::changed(|f| f.devices = vec!["a b"])),
        (
            "more devices than records",
            Forge::changed(|f| f.devices = vec!["a", "b"]),
        ),
        (
            "seq beyond the range",
            Forge::changed(|f| (f.seq, f.last_seq) = (vec![5], 3)),
        ),
        (
            "seq not increasing",
            Forge {
                seq: vec![0, 0],
                ..Forge::default().twice()
            },
        ),
        (
            "seq overflow",
            Forge::changed(|f| (f.seq, f.last_seq) = (vec![u64::MAX], u64::MAX)),
        ),
        ("undefined flags", Forge::changed(|f| f.flags = vec![1024])),
        (
            "both modes",
            Forge::changed(|f| f.flags = vec![flag::MODE_2D | flag::MODE_3D]),
        ),
        (
            "flags on a status",
            Forge {
                flags: vec![flag::OTHER | 1],
                ..Forge::default().status(0, 0)
            },
        ),
        (
            "missing optional column",
            Forge::changed(|f| f.flags = vec![flag::ALT]),
        ),
        ("extra optional column", Forge::default().with(0, 3, 1)),
        ("latitude", Forge::default().with(0, 1, 900_000_001)),
        (
            "course residual",
            Forge::default().with(flag::COURSE, 5, 1800),
        ),
        ("sats", Forge::default().with(flag::SATS, 7, 256)),
        ("negative speed", Forge::default().with(flag::SPEED, 4, -1)),
        ("unknown other", Forge::default().status(2, 0)),
        (
            "crossing code",
            Forge::default().geofence(|g| g.crossing = 4),
        ),
        ("fence id", Forge::default().geofence(|g| g.fence = "a b")),
        (
            "empty fence id",
            Forge::default().geofence(|g| g.fence = ""),
        ),
        (
            "geofence latitude",
            Forge::default().geofence(|g| g.lat = -900_000_001),
        ),
        (
            "geofence longitude",
            Forge::default().geofence(|g| g.lon = 1_800_000_001),
        ),
        (
            "geofence since",
            Forge::default().geofence(|g| g.since = Some(i64::MIN)),
        ),
        ("status time", Forge::default().status(0, i64::MAX)),
        ("position time", Forge::default().with(0, 0, i64::MAX)),
        (
            "count in the header",
            Forge::changed(|f| (f.records, f.last_seq) = (2, 2)),
        ),
        (
            "an other without its record",
            Forge::changed(|f| f.others = vec![Forged::Status(0, true, 0)]),
        ),
        ("trailing bytes", Forge::changed(|f| f.tail = vec![0])),
    ];
    for (what, forge) in cases {
        let err = decode(&forge.bytes()).expect_err(what);
        assert!(matches!(err, WireError::Malformed(_)), "{what}: {err}");
    }
}

#[test]
fn headers_that_cannot_be_true_are_refused_before_inflating() {
    let mut batch = example();
    let bytes = encode(&batch);
    assert!(matches!(decode(&[]), Err(WireError::Malformed(_))));
    assert!(matches!(decode(&[0]), Err(WireError::Version(0))));
    assert!(matches!(
        decode(&[VERSION + 1, 1, 2]),
        Err(WireError::Version(_))
    ));
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 9;
    assert!(matches!(decode(&wrong_version), Err(WireError::Version(9))));

    batch.last_seq = 103; // five records cannot fit 100..=103
    assert!(decode(&encode(&batch)).is_err());
    batch.first_seq = 104; // empty range
    assert!(decode(&encode(&batch)).is_err());
    let mut bad_gateway = example();
    bad_gateway.gateway = "g w".into();
    assert!(decode(&encode(&bad_gateway)).is_err());
    assert!(bad_gateway.check().is_err());
    let mut bad_kind = bytes.clone();
    let kind_at = 1 + 1 + "gw-1".len() + 1; // version, length, "gw-1", id
    assert_eq!(bad_kind[kind_at], 0);
    bad_kind[kind_at] = 3;
    assert!(decode(&bad_kind).unwrap_err().to_string().contains("kind"));

    let too_many = sealed(MAX_BATCH_RECORDS + 1, 0, u64::MAX, &[]);
    assert!(
        decode(&too_many)
            .unwrap_err()
            .to_string()
            .contains("exceed")
    );
}

#[test]
fn a_zlib_bomb_stops_at_the_limit() {
    // 10 MB of zeros deflate to ~10 KB; a one-record batch may inflate to ~1 KB.
    let bytes = sealed(1, 1, 1, &vec![0u8; 10 << 20]);
    assert!(bytes.len() < 64 << 10);
    let err = decode(&bytes).unwrap_err().to_string();
    assert!(err.contains("inflates to more than"), "{err}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = encode(&example());
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode(&longer).is_err());
}

#[test]
fn bit_flips_in_the_compressed_body_are_errors_and_in_the_header_never_panic() {
    let bytes = encode(&example());
    let original = decode(&bytes).expect("decodes");
    let body_at = bytes.len() - header::read(&bytes[1..]).expect("header").1.len();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1 << bit;
            if let Ok(batch) = decode(&flipped) {
                // The header carries no checksum: a flip there may make
                // another valid header (another id, kind, range). In the
                // body only the padding after deflate's last code may
                // change, and it carries nothing.
                assert!(
                    i < body_at || batch == original,
                    "flip at byte {i} bit {bit} went unnoticed"
                );
                assert!(batch.check().is_ok());
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = fastrand::Rng::with_seed(11);
    let valid = encode(&example());
    for _ in 0..20_000 {
        let mut bytes: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
        if rng.bool() {
            // Keep a valid prefix so the header parses and later checks run.
            let keep = rng.usize(0..valid.len());
            bytes.splice(0..0, valid[..keep].iter().copied());
        }
        let _ = decode(&bytes);
        let _ = read_delimited(&mut bytes.as_slice());
    }
}

#[test]
fn delimited_streams_frame_batches_and_refuse_bad_prefixes() {
    let batches = [encode(&example()), Vec::new(), vec![7; 300]];
    let mut stream = Vec::new();
    for b in &batches {
        write_delimited(&mut stream, b).expect("write");
    }
    let mut input = stream.as_slice();
    for b in &batches {
        assert_eq!(read_delimited(&mut input).expect("read").as_ref(), Some(b));
    }
    assert_eq!(read_delimited(&mut input).expect("clean end"), None);

    let eof = |bytes: &[u8]| read_delimited(&mut &bytes[..]).unwrap_err().kind();
    let mut one = Vec::new();
    write_delimited(&mut one, &batches[0]).expect("write");
    assert_eq!(
        eof(&one[..one.len() - 1]),
        std::io::ErrorKind::UnexpectedEof
    );
    assert_eq!(eof(&[0x80]), std::io::ErrorKind::UnexpectedEof);
    // Claims 16 MiB + 1 byte: refused before reading (or allocating) any.
    assert_eq!(
        eof(&[0x81, 0x80, 0x80, 0x08]),
        std::io::ErrorKind::InvalidData
    );
    // Bits beyond 64 must not wrap into a small length.
    assert_eq!(
        eof(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f]),
        std::io::ErrorKind::InvalidData
    );
    assert_eq!(eof(&[0x80; 11]), std::io::ErrorKind::InvalidData);
    // Claims the maximum but brings 3 bytes: an error, not a 16 MiB buffer.
    assert_eq!(
        eof(&[0x80, 0x80, 0x80, 0x08, 1, 2, 3]),
        std::io::ErrorKind::UnexpectedEof
    );
}

/// A receiver-like 1 Hz track: smooth motion (a Kalman-filtered receiver
/// does not jump), hdop and satellites changing now and then.
fn smooth_track(n: usize) -> Vec<Record> {
    let mut rng = fastrand::Rng::with_seed(5);
    let (mut lat, mut lon, mut heading, mut speed) = (52.0907f64, 5.1214f64, 80.0f64, 12.0f64);
    let (mut hdop, mut sats, mut alt) = (0.9, 11u8, 4.0);
    (0..n)
        .map(|i| {
            heading = (heading + (rng.f64() - 0.5) * 2.0).rem_euclid(360.0);
            speed = (speed + (rng.f64() - 0.5) * 0.3).clamp(0.0, 30.0);
            lat += speed * heading.to_radians().cos() / 111_320.0;
            lon += speed * heading.to_radians().sin() / (111_320.0 * lat.to_radians().cos());
            alt += (rng.f64() - 0.5) * 0.2;
            if rng.usize(0..60) == 0 {
                hdop = 0.7 + rng.f64() * 0.6;
                sats = 8 + rng.u8(0..6);
            }
            let fix = Fix {
                alt: Some(alt),
                speed: Some(speed),
                course: Some(heading),
                hdop: Some(hdop),
                sats: Some(sats),
                mode: Some(FixMode::ThreeD),
                ..Fix::new(utc(1_795_435_200_000 + 1000 * i as i64), lat, lon)
            };
            Record {
                seq: i as u64 + 1,
                event: Event::Position(Position::new(id("bus-1"), fix)),
            }
        })
        .collect()
}

#[test]
fn a_smooth_moving_track_costs_under_five_bytes_per_fix() {
    let records = smooth_track(DEFAULT_MAX_RECORDS);
    let batch = Batch {
        gateway: "gw-1".into(),
        id: 1,
        kind: BatchKind::Live,
        first_seq: 1,
        last_seq: DEFAULT_MAX_RECORDS as u64,
        records,
    };
    let per_fix = encode(&batch).len() as f64 / DEFAULT_MAX_RECORDS as f64;
    eprintln!("smooth track: {per_fix:.2} B/fix");
    assert!(per_fix <= 5.0, "{per_fix:.2} B/fix");
    assert_eq!(decode(&encode(&batch)).expect("decodes"), quantised(&batch));
}

#[test]
fn the_committed_version_1_example_still_decodes() {
    let bytes: Vec<u8> = (0..)
        .step_by(2)
        .map_while(|i| {
            let digits = hex_in_doc("<!-- example: batch -->");
            digits
                .get(i..i + 2)
                .map(|d| u8::from_str_radix(d, 16).expect("hex"))
        })
        .collect();
    assert_eq!(bytes[0], VERSION_1);
    assert_eq!(
        decode(&bytes).expect("version 1 decodes"),
        quantised(&example())
    );
    // Re-encoded, it goes as version 2, and means the same.
    let again = encode(&decode(&bytes).expect("decodes"));
    assert_eq!(again[0], VERSION);
    assert_eq!(decode(&again).expect("decodes"), quantised(&example()));
}

#[test]
fn nmea_grids_travel_in_steps_and_come_back_exactly() {
    let mut records = smooth_track(DEFAULT_MAX_RECORDS);
    for r in &mut records {
        if let Event::Position(p) = &mut r.event {
            // As an NMEA receiver gives them: 1e-4 minutes, 0.1 kn, whole
            // seconds; some speeds land on a tie of the 0.1 kn grid.
            let minutes = |deg: f64| (deg * 600_000.0).round() / 600_000.0;
            p.fix.lat = minutes(p.fix.lat);
            p.fix.lon = minutes(p.fix.lon);
            p.fix.speed = p.fix.speed.map(|s| (s / 0.051_444).round() * 0.051_444);
        }
    }
    let batch = Batch {
        gateway: "gw-1".into(),
        id: 1,
        kind: BatchKind::Live,
        first_seq: 1,
        last_seq: DEFAULT_MAX_RECORDS as u64,
        records,
    };
    let v2 = encode(&batch);
    assert_eq!(decode(&v2).expect("decodes"), quantised(&batch));
    let v1 = encode_as(&batch, VERSION_1);
    assert_eq!(decode(&v1).expect("decodes"), quantised(&batch));
    assert!(v2.len() * 10 < v1.len() * 9, "{} vs {}", v2.len(), v1.len());
}

#[test]
fn the_version_2_example_in_the_spec_matches_the_code() {
    let batch = example();
    let bytes = encode(&batch);
    let (_, rest) = header::read(&bytes[1..]).expect("header");
    let body = lzma::decompress(&rest[4..], 1 << 20).expect("decompresses");
    assert_eq!(
        hex(&body),
        hex_in_doc("<!-- example: body v2 -->"),
        "update the version-2 body in crates/wire/docs/wire-format.md"
    );
    assert_eq!(hex(&rest[..4]), hex(&crc32fast::hash(&body).to_le_bytes()));
    assert_eq!(decode(&bytes).expect("decodes"), quantised(&batch));
}
