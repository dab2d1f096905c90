//! What the depot screen draws under the vehicles: `GET /api/map` tells the
//! page, and `/tiles/<name>.pmtiles` serves a local tile archive by HTTP
//! range requests (the page's PMTiles reader asks for the header, the
//! directories and each tile as byte ranges), so the map works offline with
//! no tile server.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::FeedState;
use crate::config::Map;

/// The most bytes one range request is answered with: a PMTiles reader asks
/// for 16 KiB headers and single tiles; a larger range is cut to this and
/// the reader asks again for the rest, as RFC 9110 lets a server do.
const MAX_RANGE: u64 = 4 * 1024 * 1024;

/// The map settings the handlers need.
#[derive(Debug, Clone)]
pub struct MapInfo {
    /// `[map]` as configured.
    pub map: Map,
    /// This gateway's name, shown on the screen.
    pub gateway: String,
}

impl MapInfo {
    /// The archive's name under `/tiles/`, when one is configured.
    fn tiles_name(&self) -> Option<String> {
        let path = self.map.tiles.as_ref()?;
        Some(path.file_name()?.to_string_lossy().into_owned())
    }

    /// The one origin other than the gateway's that the page may reach: an
    /// online tile server (for the page's Content-Security-Policy).
    pub fn tile_origin(&self) -> Option<String> {
        super::assets::origin_of(self.map.tile_url.as_deref()?)
    }

    /// `/api/map`'s body.
    pub fn json(&self) -> serde_json::Value {
        let tiles = match (&self.map.tiles, &self.map.tile_url, self.tiles_name()) {
            (Some(_), _, Some(name)) => json!({
                "type": "pmtiles",
                "url": format!("/tiles/{name}"),
                "attribution": self.map.attribution,
                "maxzoom": self.map.max_zoom,
            }),
            (None, Some(url), _) => json!({
                "type": "xyz",
                "url": url,
                "attribution": self.map.attribution,
                "maxzoom": self.map.max_zoom,
            }),
            _ => serde_json::Value::Null,
        };
        json!({
            "gateway": self.gateway,
            "stale_after_s": self.map.stale_after.as_secs(),
            "center": self.map.center,
            "tiles": tiles,
        })
    }
}

/// `GET /api/map`.
pub async fn map(State(state): State<FeedState>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        axum::Json(state.map.json()),
    )
        .into_response()
}

/// A `Range` that cannot be satisfied (`416`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A byte range of a file of `len` bytes, from a `Range` header: `None`
/// for the whole file, `Err` when it cannot be satisfied. One range only
/// (`bytes=a-b`, `bytes=a-`, `bytes=-n`); a list is answered with its first.
pub fn range(value: &str, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        // An unknown unit is ignored (RFC 9110 14.2): the whole file.
        return Ok(None);
    };
    let first = spec.split(',').next().unwrap_or_default().trim();
    let (start, end) = first.split_once('-').ok_or(Unsatisfiable)?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", "") => return Err(Unsatisfiable),
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| Unsatisfiable)?;
            if n == 0 || len == 0 {
                return Err(Unsatisfiable);
            }
            (len.saturating_sub(n), len - 1)
        }
        (start, "") => (
            start.parse().map_err(|_| Unsatisfiable)?,
            len.saturating_sub(1),
        ),
        (start, end) => {
            let (s, e): (u64, u64) = (
                start.parse().map_err(|_| Unsatisfiable)?,
                end.parse().map_err(|_| Unsatisfiable)?,
            );
            if e < s {
                return Err(Unsatisfiable);
            }
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if start >= len {
        return Err(Unsatisfiable);
    }
    let end = end.min(start + MAX_RANGE - 1);
    Ok(Some((start, end)))
}

fn read_at(path: PathBuf, start: u64, len: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// `GET /tiles/<name>`: the configured archive, by ranges.
#[expect(
    clippy::too_many_lines,
    reason = "the byte-range rules (Range, If-Range, 206/416/304) read best in one place"
)]
pub async fn tiles(
    State(state): State<FeedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (Some(path), Some(served)) = (state.map.map.tiles.clone(), state.map.tiles_name()) else {
        return (
            StatusCode::NOT_FOUND,
            "no tile archive is configured ([map] tiles)\n",
        )
            .into_response();
    };
    if name != served {
        return StatusCode::NOT_FOUND.into_response();
    }
    let meta = match tokio::fs::metadata(&path).await {
        Ok(meta) => meta,
        Err(err) => {
            tracing::warn!(path = %path.display(), "tile archive unreadable: {err}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the tile archive cannot be read\n",
            )
                .into_response();
        }
    };
    let len = meta.len();
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    // Changes when the file is replaced: a reader that mixed ranges of two
    // archives would draw garbage, and If-Range lets it notice.
    let etag = format!("\"{len:x}-{modified:x}\"");
    let asked = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| {
            // A range of an archive that changed since is not what the
            // client thinks: send the whole new one instead.
            headers
                .get(header::IF_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|tag| tag == etag)
        });
    let wanted = match asked.map(|v| range(v, len)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(r))) => Some(r),
        Some(Err(Unsatisfiable)) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return response;
        }
    };
    let (start, end, status) = match wanted {
        Some((start, end)) => (start, end, StatusCode::PARTIAL_CONTENT),
        None if len <= MAX_RANGE => (0, len.saturating_sub(1), StatusCode::OK),
        // A whole large archive is not what the page asks for; a client
        // that wants it can ask by ranges.
        None => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::ACCEPT_RANGES, "bytes")],
                "ask for the archive by byte ranges\n",
            )
                .into_response();
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    let bytes = match tokio::task::spawn_blocking(move || read_at(path, start, count)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err)) => {
            tracing::warn!("tile archive read failed: {err}");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let mut response = (status, Body::from(bytes)).into_response();
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.pmtiles"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    response
}

/// Shared map settings for the router state.
pub fn info(map: &Map, gateway: &str) -> Arc<MapInfo> {
    Arc::new(MapInfo {
        map: map.clone(),
        gateway: gateway.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_pmtiles_readers_ask_for_them() {
        assert_eq!(range("bytes=0-16383", 100_000), Ok(Some((0, 16_383))));
        assert_eq!(range("bytes=99990-", 100_000), Ok(Some((99_990, 99_999))));
        assert_eq!(range("bytes=-10", 100_000), Ok(Some((99_990, 99_999))));
        assert_eq!(range("bytes=5-2000000", 1000), Ok(Some((5, 999))));
        assert_eq!(range("bytes=0-1, 5-9", 1000), Ok(Some((0, 1))));
        assert_eq!(range("items=0-5", 1000), Ok(None));
        assert_eq!(range("bytes=1000-", 1000), Err(Unsatisfiable));
        assert_eq!(range("bytes=9-5", 1000), Err(Unsatisfiable));
        assert_eq!(range("bytes=x-5", 1000), Err(Unsatisfiable));
        assert_eq!(
            range("bytes=0-", 100 * MAX_RANGE),
            Ok(Some((0, MAX_RANGE - 1)))
        );
    }

    #[test]
    fn the_page_learns_the_archive_or_the_online_template() {
        let mut map = Map {
            tiles: Some(PathBuf::from("/srv/maps/depot.pmtiles")),
            attribution: Some("© OpenStreetMap".into()),
            ..Map::default()
        };
        let info = MapInfo {
            map: map.clone(),
            gateway: "depot-3".into(),
        };
        let json = info.json();
        assert_eq!(json["tiles"]["url"], "/tiles/depot.pmtiles");
        assert_eq!(json["stale_after_s"], 60);
        assert_eq!(info.tile_origin(), None);
        map.tiles = None;
        map.tile_url = Some("https://tile.example.org/{z}/{x}/{y}.png".into());
        let info = MapInfo {
            map,
            gateway: "depot-3".into(),
        };
        assert_eq!(info.json()["tiles"]["type"], "xyz");
        assert_eq!(
            info.tile_origin().as_deref(),
            Some("https://tile.example.org")
        );
    }
}
