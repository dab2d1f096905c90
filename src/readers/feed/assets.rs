//! The depot screen's static files, embedded in the binary: `GET /` and
//! `GET /assets/<version>/<path>`.
//!
//! The files are `include_bytes!` of `web/`, so the binary serves the same
//! bytes whatever profile built it: `rust-embed` and its kind read from disk
//! in debug builds, and CI packages a debug binary (275 KB of files). Each
//! file is gzipped once, at the first request, and the gzip kept on the heap
//! (about 90 KB in all); the plain bytes are served from the binary itself.
//!
//! Caching: the page (`/`) is `no-cache` with a strong `ETag`, so a browser
//! revalidates it at every load and gets `304` while the binary is the same.
//! Every other file lives under `/assets/<version>/`, where `<version>` is a
//! hash of all the files' contents; the page names its files with that
//! prefix (the `%ASSETS%` placeholder in `web/index.html`), so they can be
//! cached for a year: a new binary with other files has another version, and
//! its page names other URLs. ES modules import each other by relative paths,
//! which stay under the same prefix.
//!
//! The page gets a strict `Content-Security-Policy`: it may load and connect
//! to its own origin only (plus `data:`/`blob:` images, which the PMTiles
//! layer makes), and one configured tile origin when there is one.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The placeholder in `web/index.html` for the assets' URL prefix.
const PLACEHOLDER: &str = "%ASSETS%";

/// The page.
const INDEX: &[u8] = include_bytes!("../../../web/index.html");

/// Every file served under `/assets/<version>/`: its path under `web/` and
/// its bytes. A unit test checks that every file in `web/` is here.
const FILES: &[(&str, &[u8])] = &[
    ("app.css", include_bytes!("../../../web/app.css")),
    ("icon.svg", include_bytes!("../../../web/icon.svg")),
    ("js/main.js", include_bytes!("../../../web/js/main.js")),
    ("js/feed.js", include_bytes!("../../../web/js/feed.js")),
    ("js/fleet.js", include_bytes!("../../../web/js/fleet.js")),
    ("js/map.js", include_bytes!("../../../web/js/map.js")),
    (
        "js/vehicles.js",
        include_bytes!("../../../web/js/vehicles.js"),
    ),
    ("js/panel.js", include_bytes!("../../../web/js/panel.js")),
    (
        "js/history.js",
        include_bytes!("../../../web/js/history.js"),
    ),
    ("js/meter.js", include_bytes!("../../../web/js/meter.js")),
    ("js/util.js", include_bytes!("../../../web/js/util.js")),
    (
        "vendor/leaflet-1.9.4/leaflet.js",
        include_bytes!("../../../web/vendor/leaflet-1.9.4/leaflet.js"),
    ),
    (
        "vendor/leaflet-1.9.4/leaflet.css",
        include_bytes!("../../../web/vendor/leaflet-1.9.4/leaflet.css"),
    ),
    (
        "vendor/leaflet-1.9.4/LICENSE",
        include_bytes!("../../../web/vendor/leaflet-1.9.4/LICENSE"),
    ),
    (
        "vendor/pmtiles-4.5.0/pmtiles.js",
        include_bytes!("../../../web/vendor/pmtiles-4.5.0/pmtiles.js"),
    ),
    (
        "vendor/pmtiles-4.5.0/LICENSE",
        include_bytes!("../../../web/vendor/pmtiles-4.5.0/LICENSE"),
    ),
    (
        "vendor/pmtiles-4.5.0/LICENSE.fflate",
        include_bytes!("../../../web/vendor/pmtiles-4.5.0/LICENSE.fflate"),
    ),
    (
        "vendor/README.md",
        include_bytes!("../../../web/vendor/README.md"),
    ),
];

/// How long a versioned asset may be cached.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// One file ready to serve.
struct Prepared {
    plain: Bytes,
    /// The gzipped bytes, when they are smaller.
    gzip: Option<Bytes>,
    /// Hash of the plain bytes, the base of both representations' ETags.
    hash: u64,
    content_type: &'static str,
}

impl Prepared {
    /// `bytes` is the file in the binary (`Bytes::from_static`: not copied)
    /// or the page made at start-up.
    fn new(path: &str, bytes: Bytes) -> Self {
        let gzip = gzip(&bytes);
        let gzip = (gzip.len() < bytes.len()).then(|| Bytes::from(gzip));
        Self {
            hash: fnv1a(&bytes),
            plain: bytes,
            gzip,
            content_type: content_type(path),
        }
    }

    /// `"<hash>"` for the plain bytes, `"<hash>-gz"` for the gzipped ones:
    /// strong ETags must differ between representations.
    fn etag(&self, gzipped: bool) -> HeaderValue {
        let tag = if gzipped {
            format!("\"{:016x}-gz\"", self.hash)
        } else {
            format!("\"{:016x}\"", self.hash)
        };
        // Hex digits and quotes only.
        HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\""))
    }
}

/// The embedded site: the page and its files, prepared once.
struct Site {
    version: String,
    index: Prepared,
    files: HashMap<&'static str, Prepared>,
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let version = version();
        let index = String::from_utf8_lossy(INDEX)
            .replace(PLACEHOLDER, &format!("/assets/{version}"))
            .into_bytes();
        let files = FILES
            .iter()
            .map(|(path, bytes)| (*path, Prepared::new(path, Bytes::from_static(bytes))))
            .collect();
        Site {
            index: Prepared::new("index.html", Bytes::from(index)),
            files,
            version,
        }
    })
}

/// The assets' version: a hash of every file's path and contents (the page
/// is left out: it names the version, and changes with it).
fn version() -> String {
    let mut all = Vec::new();
    for (path, bytes) in FILES {
        all.extend_from_slice(path.as_bytes());
        all.push(0);
        all.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        all.extend_from_slice(bytes);
    }
    format!("{:012x}", fnv1a(&all) >> 16)
}

/// 64-bit FNV-1a: a stable content hash for ETags and the version (no
/// cryptographic strength is needed: the contents are our own).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `bytes` as a gzip member (RFC 1952): deflate by `miniz_oxide`, which the
/// daemon already links, framed by hand (ten header bytes, CRC-32, length).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(bytes, 9);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    // Magic, deflate, no flags, no mtime, "maximum compression", unknown OS.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out
}

fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
    match extension {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "md" => "text/markdown; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

/// What the page may load: its own origin, and `tile_origin` for images
/// when an online tile URL is configured.
pub fn content_security_policy(tile_origin: Option<&str>) -> String {
    let tiles = tile_origin.map(|o| format!(" {o}")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; \
         img-src 'self' data: blob:{tiles}; connect-src 'self'; font-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    )
}

/// Options of the page.
#[derive(Debug, Clone, Default)]
pub struct PageOptions {
    /// The origin (`https://host[:port]`) of an online tile URL template, the
    /// one other place the page may load images from (see [`origin_of`]).
    pub tile_origin: Option<String>,
}

/// The origin (`scheme://host[:port]`) of an `http`/`https` URL such as a
/// tile URL template (`https://tile.example.org/{z}/{x}/{y}.png`), for the
/// page's CSP; `None` for anything else. The host may hold only the
/// characters of a host name, an IPv6 literal or a port, so nothing taken
/// from the configuration can add a directive to the header.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if host.is_empty() || host.contains('@') || !host.chars().all(allowed) {
        return None;
    }
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// The depot screen's routes: `GET /` and `GET /assets/<version>/<path>`
/// (HEAD too).
pub fn routes<S>(options: PageOptions) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let csp: Arc<str> = content_security_policy(options.tile_origin.as_deref()).into();
    Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap| {
                let csp = csp.clone();
                async move { index(&headers, &csp) }
            }),
        )
        .route("/assets/{version}/{*path}", get(asset))
}

fn index(headers: &HeaderMap, csp: &str) -> Response {
    let mut response = respond(&site().index, headers, "no-cache");
    let extra = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(csp) {
        extra.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    extra.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn asset(Path((version, path)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let site = site();
    let Some(file) = site.files.get(path.as_str()) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    // A page of another build (open across an upgrade) still gets the file,
    // but must not cache this one under its old version's name for a year.
    let cache = if version == site.version {
        IMMUTABLE
    } else {
        "no-cache"
    };
    respond(file, &headers, cache)
}

/// The file, gzipped when the client takes gzip, or `304` when the client's
/// copy is current.
fn respond(file: &Prepared, headers: &HeaderMap, cache: &'static str) -> Response {
    let gzipped = file.gzip.is_some() && accepts_gzip(headers);
    let etag = file.etag(gzipped);
    let mut response = if none_match(headers, file) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = match (&file.gzip, gzipped) {
            (Some(gzip), true) => gzip.clone(),
            _ => file.plain.clone(),
        };
        let mut response = Response::new(Body::from(body));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(file.content_type),
        );
        if gzipped {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether `Accept-Encoding` takes gzip (`gzip` or `*`, without `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut star = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(q > 0.0);
            } else if coding == "*" {
                star = Some(q > 0.0);
            }
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// Whether `If-None-Match` names either representation of `file` (weak
/// comparison, as RFC 9110 has it for `If-None-Match`), or is `*`.
fn none_match(headers: &HeaderMap, file: &Prepared) -> bool {
    let plain = file.etag(false);
    let gzipped = file.etag(true);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| {
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag == "*" || tag.as_bytes() == plain.as_bytes() || tag.as_bytes() == gzipped.as_bytes()
        })
}

/// The assets' version (the prefix the page names its files with).
pub fn assets_version() -> &'static str {
    &site().version
}

/// Bytes a first load transfers at most, gzipped where the file is
/// compressed: the page and every script and style sheet (licences, the
/// vendor README and the PMTiles layer, which loads only with a PMTiles
/// basemap, left out).
pub fn first_load_bytes() -> usize {
    let site = site();
    let size = |f: &Prepared| f.gzip.as_ref().map_or(f.plain.len(), Bytes::len);
    size(&site.index)
        + site
            .files
            .iter()
            .filter(|(path, _)| {
                (path.ends_with(".js") || path.ends_with(".css") || path.ends_with(".svg"))
                    && !path.contains("pmtiles")
            })
            .map(|(_, f)| size(f))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8]);
        let body = &bytes[10..bytes.len() - 8];
        let plain = miniz_oxide::inflate::decompress_to_vec(body).expect("inflate");
        let crc = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&plain));
        assert_eq!(len as usize, plain.len());
        plain
    }

    #[test]
    fn gzip_round_trips() {
        for input in [&b""[..], b"a", &[7u8; 100_000], INDEX] {
            assert_eq!(gunzip(&gzip(input)), input);
        }
    }

    #[test]
    fn every_file_under_web_is_embedded() {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("read web/").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else if let Ok(rel) = path.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut found = Vec::new();
        walk(&base, &base, &mut found);
        let embedded: Vec<&str> = FILES.iter().map(|(p, _)| *p).collect();
        for file in &found {
            assert!(
                file == "index.html" || embedded.contains(&file.as_str()),
                "web/{file} is not in assets::FILES"
            );
        }
    }

    #[test]
    fn the_page_names_its_files_under_the_version() {
        let site = site();
        let page = String::from_utf8_lossy(&site.index.plain).into_owned();
        assert!(!page.contains(PLACEHOLDER));
        assert!(page.contains(&format!("/assets/{}/js/main.js", site.version)));
        assert_eq!(site.version.len(), 12);
    }

    #[test]
    fn first_load_is_under_300_kb_compressed() {
        let bytes = first_load_bytes();
        assert!(bytes <= 300 * 1024, "first load {bytes} bytes");
    }

    #[test]
    fn accept_encoding_is_parsed() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&h)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, gzip;q=0.8"));
        assert!(with("*"));
        assert!(!with("gzip;q=0"));
        assert!(!with("br"));
        assert!(!with("*, gzip;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_origin_of_a_tile_url_is_taken_safely() {
        assert_eq!(
            origin_of("https://Tile.Example.org/{z}/{x}/{y}.png").as_deref(),
            Some("https://tile.example.org")
        );
        assert_eq!(
            origin_of("http://10.0.0.5:8081/tiles/{z}/{x}/{y}.png?key=1").as_deref(),
            Some("http://10.0.0.5:8081")
        );
        assert_eq!(
            origin_of("https://[::1]:9000/{z}/{x}/{y}").as_deref(),
            Some("https://[::1]:9000")
        );
        for bad in [
            "/tiles/{z}/{x}/{y}.png",
            "ftp://host/x",
            "https://",
            "https://a b/",
            "https://host;script-src */",
            "https://user@host/",
            "https://{s}.tile.example.org/{z}/{x}/{y}.png",
        ] {
            assert_eq!(origin_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn csp_names_the_tile_origin_only_when_given() {
        let plain = content_security_policy(None);
        assert!(plain.contains("default-src 'self'"));
        assert!(plain.contains("img-src 'self' data: blob:;"));
        let online = content_security_policy(Some("https://tile.example.org"));
        assert!(online.contains("img-src 'self' data: blob: https://tile.example.org;"));
    }
}
