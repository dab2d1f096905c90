// The Leaflet map: no basemap by default (fences, trails and a scale bar on
// a plain background are useful on their own), a raster PMTiles archive the
// gateway serves, or an online XYZ tile URL. Fences are Leaflet vectors on
// one canvas renderer; their names are DOM labels filled with textContent.

import { api, el, escapeHtml } from './util.js';

/** Makes the map in `container`. */
export function makeMap(container, { kiosk, center, maxZoom }) {
  const L = window.L;
  const map = L.map(container, {
    preferCanvas: true,
    // Zoom and fade animations move Leaflet's panes with CSS transforms for
    // a quarter second, during which a canvas drawn in container pixels
    // would float off its place; jumping is also kinder to a Pi's GPU.
    zoomAnimation: false,
    fadeAnimation: false,
    markerZoomAnimation: false,
    zoomControl: !kiosk,
    attributionControl: true,
    maxZoom: maxZoom ?? 19,
    minZoom: 2,
    worldCopyJump: false,
  });
  // Leaflet's prefix is a link with a flag; plain text is enough and keeps
  // kiosk screens free of links.
  map.attributionControl.setPrefix('Leaflet');
  L.control.scale({ imperial: false, position: 'bottomleft' }).addTo(map);
  if (Array.isArray(center) && center.length === 2 && center.every(Number.isFinite)) {
    map.setView([center[0], center[1]], 14);
  } else {
    map.setView([20, 0], 2);
  }
  return map;
}

/** Loads a classic script of our own origin once (the PMTiles layer). */
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.appendChild(script);
  });
}

/**
 * Adds the configured basemap, if any; resolves to a description for the
 * page state ("none", "pmtiles", "xyz" or "error: ...").
 */
export async function addBasemap(map, tiles, assetsBase) {
  const L = window.L;
  if (!tiles || typeof tiles.url !== 'string') return 'none';
  const attribution = typeof tiles.attribution === 'string' ? escapeHtml(tiles.attribution) : '';
  const maxNativeZoom = Number.isFinite(tiles.maxzoom) ? tiles.maxzoom : undefined;
  if (tiles.type === 'xyz') {
    L.tileLayer(tiles.url, { attribution, maxNativeZoom, maxZoom: map.getMaxZoom() }).addTo(map);
    return 'xyz';
  }
  if (tiles.type === 'pmtiles') {
    try {
      await loadScript(`${assetsBase}/vendor/pmtiles-4.5.0/pmtiles.js`);
      const archive = new window.pmtiles.PMTiles(api(tiles.url));
      const header = await archive.getHeader();
      // 1 = MVT, 6 = MLT: vector tiles need a style renderer (MapLibre,
      // WebGL) that this screen does not carry.
      if (header.tileType === 1 || header.tileType === 6) {
        return 'error: vector tiles (use a raster PMTiles archive)';
      }
      window.pmtiles.leafletRasterLayer(archive, {
        attribution,
        maxNativeZoom: maxNativeZoom ?? header.maxZoom,
        minZoom: 0,
        maxZoom: map.getMaxZoom(),
      }).addTo(map);
      return 'pmtiles';
    } catch (err) {
      return `error: ${err && err.message ? err.message : err}`;
    }
  }
  return 'none';
}

/** A fence's label: a DOM node with its name as text (never markup). */
function label(name) {
  return el('span', 'fence-name', name);
}

/**
 * Draws the fences of a `/api/geofences` FeatureCollection; returns the
 * layer group (replaced on reload) and fills `names` (id -> name).
 */
export function drawFences(map, collection, names, previous) {
  const L = window.L;
  if (previous) previous.remove();
  const group = L.featureGroup();
  names.clear();
  const features = collection && Array.isArray(collection.features) ? collection.features : [];
  const style = { color: '#c2410c', weight: 2, opacity: 0.9, fillOpacity: 0.06, interactive: false };
  for (const f of features) {
    if (!f || !f.geometry) continue;
    const props = f.properties && typeof f.properties === 'object' ? f.properties : {};
    const id = f.id !== undefined && f.id !== null ? String(f.id) : '';
    const name = typeof props.name === 'string' && props.name ? props.name : id;
    if (id) names.set(id, name);
    let layer = null;
    try {
      const g = f.geometry;
      if (g.type === 'Point' && Number.isFinite(props.radius_m)) {
        const [lon, lat] = g.coordinates;
        layer = L.circle([lat, lon], { ...style, radius: props.radius_m });
      } else if (g.type === 'Polygon' || g.type === 'MultiPolygon') {
        layer = L.geoJSON(f, { style: () => style, interactive: false });
      }
    } catch {
      layer = null; // a malformed feature is skipped, not fatal
    }
    if (!layer) continue;
    if (name) {
      layer.bindTooltip(label(name), {
        permanent: true, direction: 'center', className: 'fence-label', interactive: false,
      });
    }
    group.addLayer(layer);
  }
  group.addTo(map);
  return group;
}
