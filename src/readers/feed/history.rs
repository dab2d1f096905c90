//! `GET /api/history`: one device's track from the gateway's own store, as
//! GeoJSON (a LineString plus its events), GPX 1.1 or JSON Lines.
//!
//! The store is ordered by arrival, not by device or fix time, so a request
//! scans it (on the blocking pool, a few at a time), keeps the device's
//! records in the span, and refuses with `400` a span that holds more fixes
//! than the request's limit rather than cutting the track short silently.
//! The selected records are then encoded a chunk at a time into a bounded
//! channel that the response streams from. Historic fixes (found late) are
//! included in their place and marked.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::FeedState;
use crate::fix::{DeviceId, Event, FixMode, Record};
use crate::store::Reader;
use crate::telemetry;

/// Fixes a request returns unless it asks for fewer.
pub const DEFAULT_LIMIT: usize = 10_000;
/// The most fixes one request may ask for.
pub const MAX_LIMIT: usize = 100_000;
/// The longest span one request may cover.
pub const MAX_SPAN: chrono::Duration = chrono::Duration::days(31);
/// Scans of the store at once; beyond, `503`.
pub const CONCURRENT: usize = 2;
/// Bytes per streamed chunk.
const CHUNK: usize = 64 * 1024;

/// The query of `/api/history`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    device: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    limit: Option<String>,
}

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A FeatureCollection: the track as a LineString, events as Points.
    GeoJson,
    /// A GPX 1.1 document: events as waypoints, the track as one segment.
    Gpx,
    /// One record per line, in time order, as the feed shows it plus `seq`.
    JsonLines,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Self::GeoJson => "application/geo+json",
            Self::Gpx => "application/gpx+xml",
            Self::JsonLines => "application/x-ndjson",
        }
    }
}

/// A checked request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The device.
    pub device: DeviceId,
    /// From this fix time on (inclusive).
    pub from: DateTime<Utc>,
    /// Up to this fix time (inclusive).
    pub to: DateTime<Utc>,
    /// How to encode it.
    pub format: Format,
    /// The most fixes to return.
    pub limit: usize,
}

/// A time parameter: RFC 3339, or epoch milliseconds.
fn time(name: &str, text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    text.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| {
            format!(
                "`{name}` must be an RFC 3339 time (2026-12-04T08:00:00Z) or epoch milliseconds"
            )
        })
}

impl Request {
    /// Checks a query; `now` is the default end.
    pub fn parse(query: &HistoryQuery, now: DateTime<Utc>) -> Result<Self, String> {
        let device = query.device.as_deref().ok_or("`device` is required")?;
        let device = DeviceId::new(device).map_err(|e| format!("`device`: {e}"))?;
        let from = time("from", query.from.as_deref().ok_or("`from` is required")?)?;
        let to = match query.to.as_deref() {
            Some(text) => time("to", text)?,
            None => now,
        };
        if to < from {
            return Err("`to` is before `from`".into());
        }
        if to - from > MAX_SPAN {
            return Err(format!(
                "the span is longer than {} days; ask for less at a time",
                MAX_SPAN.num_days()
            ));
        }
        let format = match query.format.as_deref().unwrap_or("geojson") {
            "geojson" => Format::GeoJson,
            "gpx" => Format::Gpx,
            "jsonl" => Format::JsonLines,
            other => {
                return Err(format!(
                    "`format` must be geojson, gpx or jsonl, not {:?}",
                    crate::util::log_limit::outside(other, crate::util::log_limit::OUTSIDE_CHARS)
                ));
            }
        };
        let limit = match query.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(format!("`limit` must be a number from 1 to {MAX_LIMIT}")),
            },
        };
        Ok(Self {
            device,
            from,
            to,
            format,
            limit,
        })
    }

    fn wants(&self, event: &Event) -> bool {
        event.device() == &self.device && (self.from..=self.to).contains(&event.time())
    }
}

/// What a scan found: the device's records in the span, in time order.
#[derive(Debug, Default)]
pub struct Selection {
    /// Positions, by fix time (then sequence number).
    pub positions: Vec<Record>,
    /// Status changes and geofence events, by time.
    pub events: Vec<Record>,
}

/// Why a scan gave nothing to send.
#[derive(Debug)]
pub enum ScanError {
    /// More fixes than the limit: the caller should narrow the span.
    TooMany(usize),
    /// The store failed.
    Store(crate::store::StoreError),
}

/// Reads the whole store once, keeping what `request` wants.
pub fn scan(reader: &Reader, request: &Request) -> Result<Selection, ScanError> {
    let mut selection = Selection::default();
    let mut after = 0;
    loop {
        let chunk = reader.read_after(after, 4096).map_err(ScanError::Store)?;
        let Some(last) = chunk.last() else { break };
        after = last.seq;
        for record in chunk {
            if !request.wants(&record.event) {
                continue;
            }
            match record.event {
                Event::Position(_) => {
                    if selection.positions.len() == request.limit {
                        return Err(ScanError::TooMany(request.limit));
                    }
                    selection.positions.push(record);
                }
                _ => selection.events.push(record),
            }
        }
    }
    let key = |r: &Record| (r.event.time(), r.seq);
    selection.positions.sort_by_key(key);
    selection.events.sort_by_key(key);
    Ok(selection)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Escapes text for XML content and attribute values.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The encoded document, piece by piece: a head, one piece per record, a
/// tail. Pure: the handler streams the pieces, the tests read them whole.
pub fn encode<'a>(
    request: &'a Request,
    selection: &'a Selection,
) -> impl Iterator<Item = String> + 'a {
    let head = match request.format {
        Format::GeoJson => geojson_head(request, selection),
        Format::Gpx => gpx_head(request, selection),
        Format::JsonLines => String::new(),
    };
    let body: Box<dyn Iterator<Item = String> + 'a> = match request.format {
        Format::GeoJson => Box::new(geojson_coordinates(selection)),
        Format::Gpx => Box::new(selection.positions.iter().map(gpx_point)),
        Format::JsonLines => Box::new(json_lines(selection)),
    };
    let tail = match request.format {
        Format::GeoJson => geojson_tail(request, selection),
        Format::Gpx => "</trkseg></trk>\n</gpx>\n".to_owned(),
        Format::JsonLines => String::new(),
    };
    std::iter::once(head)
        .chain(body)
        .chain(std::iter::once(tail))
}

fn event_json(record: &Record) -> serde_json::Value {
    let mut value = record
        .event
        .to_json()
        .ok()
        .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        .unwrap_or(serde_json::Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("seq".into(), record.seq.into());
        object.insert("event".into(), record.event.name().into());
    }
    value
}

fn json_lines(selection: &Selection) -> impl Iterator<Item = String> + '_ {
    // Merged by time: positions and events interleave as they happened.
    let mut positions = selection.positions.iter().peekable();
    let mut events = selection.events.iter().peekable();
    std::iter::from_fn(move || {
        let next = match (positions.peek(), events.peek()) {
            (Some(p), Some(e)) if e.event.time() < p.event.time() => events.next(),
            (Some(_), _) => positions.next(),
            (None, Some(_)) => events.next(),
            (None, None) => None,
        }?;
        Some(format!("{}\n", event_json(next)))
    })
}

/// The LineString's per-point properties go after its coordinates (GeoJSON
/// does not care for member order), so the coordinates can stream first.
fn geojson_head(request: &Request, selection: &Selection) -> String {
    let mut head = String::from("{\"type\":\"FeatureCollection\",\"features\":[");
    for (i, record) in selection.events.iter().enumerate() {
        if i > 0 {
            head.push(',');
        }
        let (lon, lat) = match &record.event {
            Event::Geofence(g) => (Some(g.lon), Some(g.lat)),
            _ => (None, None),
        };
        let geometry = match (lon, lat) {
            (Some(lon), Some(lat)) => {
                serde_json::json!({"type": "Point", "coordinates": [lon, lat]})
            }
            _ => serde_json::Value::Null,
        };
        let feature = serde_json::json!({
            "type": "Feature",
            "geometry": geometry,
            "properties": event_json(record),
        });
        head.push_str(&feature.to_string());
    }
    if selection.positions.is_empty() {
        return head;
    }
    if !selection.events.is_empty() {
        head.push(',');
    }
    let kind = if selection.positions.len() == 1 {
        "Point"
    } else {
        "LineString"
    };
    let _ = write!(
        head,
        "{{\"type\":\"Feature\",\"geometry\":{{\"type\":\"{kind}\",\"coordinates\":{}",
        if kind == "Point" { "" } else { "[" }
    );
    let _ = request;
    head
}

fn geojson_coordinates(selection: &Selection) -> impl Iterator<Item = String> + '_ {
    selection.positions.iter().enumerate().map(|(i, r)| {
        let Event::Position(p) = &r.event else {
            return String::new();
        };
        format!(
            "{}[{},{}]",
            if i > 0 { "," } else { "" },
            p.fix.lon,
            p.fix.lat
        )
    })
}

fn geojson_tail(request: &Request, selection: &Selection) -> String {
    if selection.positions.is_empty() {
        return "]}\n".to_owned();
    }
    let (mut times, mut speeds, mut historic, mut seqs) = (vec![], vec![], vec![], vec![]);
    for r in &selection.positions {
        if let Event::Position(p) = &r.event {
            times.push(rfc3339(p.fix.time));
            speeds.push(p.fix.speed);
            historic.push(p.historic);
            seqs.push(r.seq);
        }
    }
    let mut properties = serde_json::json!({
        "device": request.device.as_str(),
        "from": rfc3339(request.from),
        "to": rfc3339(request.to),
        "fixes": times.len(),
        "times": times,
        "speeds": speeds,
        "seqs": seqs,
    });
    if historic.iter().any(|h| *h) {
        properties["historic"] = historic.into();
    }
    let close = if selection.positions.len() == 1 {
        ""
    } else {
        "]"
    };
    format!("{close}}},\"properties\":{properties}}}]}}\n")
}

fn gpx_head(request: &Request, selection: &Selection) -> String {
    let device = xml(request.device.as_str());
    let mut head = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"fixgate\" \
xmlns=\"http://www.topografix.com/GPX/1/1\" \
xmlns:fixgate=\"https://fixgate.example.invalid/gpx/1\" \
xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
xsi:schemaLocation=\"http://www.topografix.com/GPX/1/1 http://www.topografix.com/GPX/1/1/gpx.xsd\">\n\
<metadata><name>{device}</name><desc>{} to {}</desc><time>{}</time></metadata>\n",
        rfc3339(request.from),
        rfc3339(request.to),
        rfc3339(Utc::now()),
    );
    // Waypoints come before tracks in GPX 1.1; a status change has no place.
    for record in &selection.events {
        if let Event::Geofence(g) = &record.event {
            let _ = writeln!(
                head,
                "<wpt lat=\"{}\" lon=\"{}\"><time>{}</time><name>{} {}</name><type>{}</type></wpt>",
                g.lat,
                g.lon,
                rfc3339(g.time),
                g.crossing.as_str(),
                xml(g.fence.as_str()),
                g.crossing.as_str(),
            );
        }
    }
    let _ = writeln!(head, "<trk><name>{device}</name><trkseg>");
    head
}

fn gpx_point(record: &Record) -> String {
    let Event::Position(p) = &record.event else {
        return String::new();
    };
    let f = &p.fix;
    let mut out = format!("<trkpt lat=\"{}\" lon=\"{}\">", f.lat, f.lon);
    if let Some(alt) = f.alt {
        let _ = write!(out, "<ele>{alt}</ele>");
    }
    let _ = write!(out, "<time>{}</time>", rfc3339(f.time));
    if let Some(mode) = f.mode {
        let fix = match mode {
            FixMode::TwoD => "2d",
            FixMode::ThreeD => "3d",
        };
        let _ = write!(out, "<fix>{fix}</fix>");
    }
    if let Some(sats) = f.sats {
        let _ = write!(out, "<sat>{sats}</sat>");
    }
    if let Some(hdop) = f.hdop {
        let _ = write!(out, "<hdop>{hdop}</hdop>");
    }
    let mut extensions = String::new();
    if let Some(speed) = f.speed {
        let _ = write!(extensions, "<fixgate:speed>{speed}</fixgate:speed>");
    }
    if let Some(course) = f.course {
        let _ = write!(extensions, "<fixgate:course>{course}</fixgate:course>");
    }
    if p.historic {
        extensions.push_str("<fixgate:historic>true</fixgate:historic>");
    }
    let _ = write!(extensions, "<fixgate:seq>{}</fixgate:seq>", record.seq);
    let _ = writeln!(out, "<extensions>{extensions}</extensions></trkpt>");
    out
}

/// Scans allowed at once.
pub fn permits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(CONCURRENT))
}

fn refuse(status: StatusCode, reason: &'static str, detail: String) -> Response {
    telemetry::HISTORY_REFUSED.with([reason]).increment(1);
    let body = serde_json::json!({ "error": reason, "detail": detail });
    (status, axum::Json(body)).into_response()
}

/// Serves `GET /api/history`.
#[expect(
    clippy::too_many_lines,
    reason = "an axum handler: parse, authorise, bound, then stream; each step answers its own refusal"
)]
pub async fn history(
    State(state): State<FeedState>,
    grant: Option<axum::Extension<crate::access::Grant>>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let request = match Request::parse(&query, Utc::now()) {
        Ok(request) => request,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, "bad_request", why),
    };
    if let Some(grant) = grant.as_deref() {
        let group = state.groups.of(&request.device);
        if !grant.may_read_group(group.as_ref().map(|g| g.as_str())) {
            return refuse(
                StatusCode::FORBIDDEN,
                "out_of_scope",
                format!("this token may not read device {}", request.device),
            );
        }
    }
    let Ok(permit) = state.history.clone().try_acquire_owned() else {
        let mut response = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "other history requests are being served; try again".into(),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
        return response;
    };
    let reader = state.reader.clone();
    let scanning = request.clone();
    let selection = match tokio::task::spawn_blocking(move || scan(&reader, &scanning)).await {
        Ok(Ok(selection)) => selection,
        Ok(Err(ScanError::TooMany(limit))) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "too_many",
                format!(
                    "the span holds more than {limit} fixes of {}: narrow it, or raise `limit` (at most {MAX_LIMIT})",
                    request.device
                ),
            );
        }
        Ok(Err(ScanError::Store(err))) => {
            tracing::error!("history read failed: {err}");
            return (StatusCode::INTERNAL_SERVER_ERROR, "store read failed\n").into_response();
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    telemetry::HISTORY_FIXES.increment(selection.positions.len() as u64);
    let format = request.format;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        // Held until the document is encoded: it bounds the memory of
        // selections being sent as well as the scans.
        let _permit = permit;
        let mut buffer = String::with_capacity(CHUNK);
        for piece in encode(&request, &selection) {
            buffer.push_str(&piece);
            if buffer.len() >= CHUNK
                && tx
                    .blocking_send(Bytes::from(std::mem::take(&mut buffer)))
                    .is_err()
            {
                return;
            }
        }
        let _ = tx.blocking_send(Bytes::from(buffer));
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    let filename = match format {
        Format::GeoJson => "track.geojson",
        Format::Gpx => "track.gpx",
        Format::JsonLines => "track.jsonl",
    };
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::{Crossing, FenceId, Fix, Geofence, Position};
    use chrono::TimeZone;

    fn query(pairs: &[(&str, &str)]) -> HistoryQuery {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        HistoryQuery {
            device: get("device"),
            from: get("from"),
            to: get("to"),
            format: get("format"),
            limit: get("limit"),
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 8, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn selection() -> Selection {
        let bus = DeviceId::new("bus-1").unwrap();
        let position = |seq, s, historic| Record {
            seq,
            event: Event::Position(Position {
                device: bus.clone(),
                fix: Fix {
                    alt: Some(3.5),
                    speed: Some(8.25),
                    sats: Some(9),
                    hdop: Some(0.9),
                    mode: Some(FixMode::ThreeD),
                    ..Fix::new(at(s), 52.0 + s as f64 * 1e-4, 5.1)
                },
                historic,
            }),
        };
        Selection {
            positions: vec![
                position(1, 0, false),
                position(5, 5, true),
                position(3, 10, false),
            ],
            events: vec![Record {
                seq: 2,
                event: Event::Geofence(Geofence {
                    device: bus.clone(),
                    fence: FenceId::new("depot").unwrap(),
                    crossing: Crossing::Enter,
                    time: at(1),
                    lat: 52.0001,
                    lon: 5.1,
                    speed: None,
                    limit: None,
                    since: None,
                    historic: false,
                }),
            }],
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        let now = at(3600);
        let ok = Request::parse(
            &query(&[("device", "bus-1"), ("from", "2026-12-04T08:00:00Z")]),
            now,
        )
        .unwrap();
        assert_eq!(
            (ok.format, ok.limit, ok.to),
            (Format::GeoJson, DEFAULT_LIMIT, now)
        );
        for (pairs, says) in [
            (
                vec![("from", "2026-12-04T08:00:00Z")],
                "`device` is required",
            ),
            (vec![("device", "bus 1"), ("from", "0")], "`device`"),
            (vec![("device", "b")], "`from` is required"),
            (vec![("device", "b"), ("from", "yesterday")], "RFC 3339"),
            (vec![("device", "b"), ("from", "10"), ("to", "5")], "before"),
            (
                vec![
                    ("device", "b"),
                    ("from", "0"),
                    ("to", "2026-12-04T08:00:00Z"),
                ],
                "longer than 31 days",
            ),
            (
                vec![
                    ("device", "b"),
                    ("from", "0"),
                    ("to", "1"),
                    ("format", "kml"),
                ],
                "`format`",
            ),
            (
                vec![
                    ("device", "b"),
                    ("from", "0"),
                    ("to", "1"),
                    ("limit", "100001"),
                ],
                "`limit`",
            ),
        ] {
            let err = Request::parse(&query(&pairs), now).unwrap_err();
            assert!(err.contains(says), "{pairs:?}: {err}");
        }
    }

    fn document(format: Format) -> String {
        let request = Request {
            device: DeviceId::new("bus-1").unwrap(),
            from: at(0),
            to: at(60),
            format,
            limit: 10,
        };
        let mut selection = selection();
        let key = |r: &Record| (r.event.time(), r.seq);
        selection.positions.sort_by_key(key);
        encode(&request, &selection).collect()
    }

    #[test]
    fn geojson_is_a_line_in_time_order_with_its_events() {
        let doc: serde_json::Value = serde_json::from_str(&document(Format::GeoJson)).unwrap();
        let features = doc["features"].as_array().unwrap();
        assert_eq!(features.len(), 2);
        assert_eq!(features[0]["properties"]["type"], "enter");
        assert_eq!(
            features[0]["geometry"]["coordinates"],
            serde_json::json!([5.1, 52.0001])
        );
        let track = &features[1];
        assert_eq!(track["geometry"]["type"], "LineString");
        assert_eq!(
            track["geometry"]["coordinates"].as_array().unwrap().len(),
            3
        );
        assert_eq!(track["properties"]["seqs"], serde_json::json!([1, 5, 3]));
        assert_eq!(
            track["properties"]["historic"],
            serde_json::json!([false, true, false])
        );
        assert_eq!(track["properties"]["times"][1], "2026-12-04T08:00:05.000Z");
    }

    #[test]
    fn json_lines_interleave_events_by_time() {
        let doc = document(Format::JsonLines);
        let seqs: Vec<u64> = doc
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 5, 3]);
    }

    #[test]
    fn gpx_puts_waypoints_before_the_track_and_marks_historic_points() {
        let doc = document(Format::Gpx);
        let wpt = doc.find("<wpt").unwrap();
        let trk = doc.find("<trk>").unwrap();
        assert!(wpt < trk);
        assert_eq!(doc.matches("<trkpt").count(), 3);
        assert_eq!(doc.matches("<fixgate:historic>true").count(), 1);
        assert!(doc.contains("<ele>3.5</ele><time>2026-12-04T08:00:00.000Z</time><fix>3d</fix><sat>9</sat><hdop>0.9</hdop>"));
        assert!(doc.trim_end().ends_with("</gpx>"));
    }

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(xml("a<b&\"c'"), "a&lt;b&amp;&quot;c&apos;");
    }
}
