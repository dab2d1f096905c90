//! Reads `[map]`: the depot screen's base map (a local PMTiles archive or an
//! online tile URL template), its credit, and the view; and `[[group]]`, the
//! device groups screens and tokens are scoped by.

use std::time::Duration;

use toml::de::DeValue;

use super::{Reader, Section};
use crate::config::Map;
use crate::fix::GroupId;
use crate::groups::GroupRule;
use crate::util::pattern::Glob;

/// The keys of each `[[group]]`.
pub const GROUP_KEYS: &[&str] = &["name", "devices"];

/// The keys of `[map]`.
pub const MAP_KEYS: &[&str] = &[
    "tiles",
    "tile_url",
    "attribution",
    "max_zoom",
    "center",
    "stale_after",
];

impl Reader<'_> {
    pub(super) fn map(&mut self, s: &Section<'_, '_>) -> Map {
        let mut map = Map::default();
        if let Some((path, span)) = self.path(s, "tiles") {
            let is_pmtiles = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("pmtiles"));
            if !is_pmtiles {
                self.report(
                    &span,
                    format!(
                        "{} must be a PMTiles archive (a file named *.pmtiles), not {}",
                        s.key("tiles"),
                        path.display()
                    ),
                );
            } else {
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => map.tiles = Some(path),
                    Ok(_) => self.report(
                        &span,
                        format!("{} {} is not a file", s.key("tiles"), path.display()),
                    ),
                    Err(err) => self.report(
                        &span,
                        format!("{} {}: {err}", s.key("tiles"), path.display()),
                    ),
                }
            }
        }
        if let Some((url, span)) = self.string(s, "tile_url") {
            match check_tile_url(url) {
                Ok(()) => map.tile_url = Some(url.to_owned()),
                Err(why) => self.report(&span, format!("{} {why}", s.key("tile_url"))),
            }
        }
        if map.tiles.is_some() && map.tile_url.is_some() {
            if let Some((_, span)) = self.string(s, "tile_url") {
                self.report(
                    &span,
                    format!(
                        "{} and {} are alternatives: set one",
                        s.key("tiles"),
                        s.key("tile_url")
                    ),
                );
            }
        }
        if let Some((text, span)) = self.string(s, "attribution") {
            if text.chars().count() > 300 {
                self.report(
                    &span,
                    format!("{} is longer than 300 characters", s.key("attribution")),
                );
            } else {
                map.attribution = Some(text.to_owned());
            }
        }
        if let Some(zoom) = self.integer(s, "max_zoom", 0..=24) {
            map.max_zoom = Some(zoom);
        }
        map.center = self.center(s);
        let stale = Duration::from_secs(5)..=Duration::from_secs(86_400);
        if let Some((d, _)) = self.duration(s, "stale_after", stale) {
            map.stale_after = d;
        }
        map
    }
}

impl Reader<'_> {
    /// One `[[group]]`: a `name` and `devices`, patterns of device ids.
    pub(super) fn group(&mut self, s: &Section<'_, '_>) -> Option<GroupRule> {
        if !self.require(s, "name") || !self.require(s, "devices") {
            return None;
        }
        let (text, span) = self.string(s, "name")?;
        let name = match GroupId::new(text) {
            Ok(name) => name,
            Err(err) => {
                self.report(&span, format!("{} {text:?}: {err}", s.key("name")));
                return None;
            }
        };
        let (items, span) = self.typed(
            s,
            "devices",
            "an array of device id patterns",
            DeValue::as_array,
        )?;
        let mut devices = Vec::with_capacity(items.len());
        for item in items {
            match item.get_ref().as_str().map(Glob::new) {
                Some(Ok(glob)) => devices.push(glob),
                Some(Err(err)) => self.report(&item.span(), format!("{}: {err}", s.key("devices"))),
                None => self.report(
                    &item.span(),
                    format!(
                        "each of {} must be a pattern string like \"bus-*\"",
                        s.key("devices")
                    ),
                ),
            }
        }
        if devices.is_empty() {
            self.report(&span, format!("{} names no devices", s.key("devices")));
            return None;
        }
        Some(GroupRule { name, devices })
    }
}

/// An `https://` (or `http://`) template with `{z}`, `{x}` and `{y}`.
fn check_tile_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("must start with https:// (or http://), not {url:?}"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('{') {
        return Err(format!("must name a fixed host, not {url:?}"));
    }
    for part in ["{z}", "{x}", "{y}"] {
        if !url.contains(part) {
            return Err(format!(
                "must contain {part}, as in https://tile.example.org/{{z}}/{{x}}/{{y}}.png"
            ));
        }
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '<' || c == '>')
    {
        return Err("must not contain spaces or quotes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_tile_url;

    #[test]
    fn a_tile_url_needs_a_scheme_a_fixed_host_and_the_three_placeholders() {
        assert!(check_tile_url("https://tile.openstreetmap.org/{z}/{x}/{y}.png").is_ok());
        assert!(check_tile_url("ftp://x/{z}/{x}/{y}").is_err());
        assert!(check_tile_url("https://{s}.tile.org/{z}/{x}/{y}.png").is_err());
        assert!(check_tile_url("https://tile.org/{z}/{x}.png").is_err());
        assert!(check_tile_url("https://tile.org/{z}/{x}/{y}.png\" onerror").is_err());
    }
}
