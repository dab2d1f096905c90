// The depot screen: wires the feed, the model, the map and the panels.
//
// URL options: `?kiosk` (wall screen: full-screen map, no controls, large
// type, dark, fits the fleet by itself), `?theme=light|dark`, `?stats`
// (frame timing in the corner), `?cluster=N` (cluster above N vehicles on
// screen; 0 never), `?trail=MIN` (trail length), `?stuck=S` (seconds without
// an event before the stream is checked for a stall).
//
// The page's state is mirrored in `data-*` attributes of <body> and in
// `window.fixgateScreen`, so that tests and monitors can read it.

import { Feed } from './feed.js';
import { Fleet } from './fleet.js';
import { History } from './history.js';
import { addBasemap, drawFences, makeMap } from './map.js';
import { FrameMeter } from './meter.js';
import { DeviceList, EventLog, summary } from './panel.js';
import { ago, api, Backoff, el, kmh, sleep } from './util.js';
import { VehicleLayer } from './vehicles.js';

const params = new URLSearchParams(window.location.search);
const kiosk = params.has('kiosk');
const body = document.body;
const assetsBase = new URL('..', import.meta.url).pathname.replace(/\/$/, '');
const numberParam = (name, fallback) => {
  const v = Number(params.get(name));
  return params.has(name) && Number.isFinite(v) && v >= 0 ? v : fallback;
};

// Errors and CSP violations are counted where tests can see them.
let errors = 0;
let violations = 0;
window.addEventListener('error', () => { errors += 1; });
window.addEventListener('unhandledrejection', () => { errors += 1; });
document.addEventListener('securitypolicyviolation', () => { violations += 1; });

/** The theme: `?theme=`, else the saved choice, else dark for kiosks and the system's for desks. */
function initialTheme() {
  const asked = params.get('theme');
  if (asked === 'light' || asked === 'dark') return asked;
  if (kiosk) return 'dark';
  let saved = null;
  try {
    saved = window.localStorage.getItem('fixgate-theme');
  } catch {
    saved = null; // storage may be disabled
  }
  if (saved === 'light' || saved === 'dark') return saved;
  return window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function themeColours() {
  const style = getComputedStyle(body);
  return {
    text: style.getPropertyValue('--marker-text').trim() || '#111827',
    halo: style.getPropertyValue('--marker-halo').trim() || 'rgba(255,255,255,0.85)',
    outline: style.getPropertyValue('--marker-outline').trim() || '#ffffff',
  };
}

/** `/api/map`, or defaults when the gateway has none (404) or does not answer. */
async function mapConfig() {
  try {
    const response = await fetch(api('/api/map'), { cache: 'no-store' });
    if (response.ok) {
      const body = await response.json();
      if (body && typeof body === 'object' && !Array.isArray(body)) return body;
    }
  } catch {
    // defaults below
  }
  return { tiles: null };
}

async function main() {
  if (kiosk) body.classList.add('kiosk');
  body.dataset.theme = initialTheme();
  body.dataset.connection = 'connecting';

  const config = await mapConfig();
  const fleet = new Fleet({
    staleAfterMs: (Number.isFinite(config.stale_after_s) ? config.stale_after_s : 60) * 1000,
    trailMinutes: numberParam('trail', 5),
  });
  if (typeof config.gateway === 'string' && config.gateway) {
    document.querySelector('.gateway-name').textContent = config.gateway;
    document.title = `${config.gateway} · depot screen`;
  }
  const tiles = config.tiles && typeof config.tiles === 'object' ? config.tiles : null;
  const map = makeMap(document.getElementById('map'), {
    kiosk,
    center: config.center,
    maxZoom: tiles && Number.isFinite(tiles.maxzoom) ? Math.max(tiles.maxzoom + 2, 18) : 19,
  });
  body.dataset.basemap = tiles ? 'loading' : 'none';
  addBasemap(map, tiles, assetsBase).then((result) => {
    body.dataset.basemap = result;
    body.classList.toggle('has-tiles', result === 'pmtiles' || result === 'xyz');
    if (result.startsWith('error')) document.querySelector('.basemap-note').textContent = `Basemap: ${result}`;
  });

  let selected = null;
  let follow = false;
  let fences = null;
  let fencesText = '';
  const layer = new VehicleLayer(map, fleet, {
    kiosk,
    clusterAbove: numberParam('cluster', 300),
    onSelect: (id) => select(id),
  });
  layer.setTheme(themeColours());
  const list = new DeviceList(document.getElementById('devices'), fleet, { onSelect: (id) => select(id, true) });
  const log = new EventLog(document.getElementById('log'), fleet, { max: 200, onSelect: (id) => select(id, true) });
  const ticker = new EventLog(document.getElementById('ticker'), fleet, { max: 6 });
  const history = new History(document.getElementById('history'), map, fleet);
  const meter = new FrameMeter();
  if (params.has('stats')) meter.start();

  const selection = document.getElementById('selection');
  const selectionFields = {
    name: selection.querySelector('.sel-name'),
    state: selection.querySelector('.sel-state'),
    detail: selection.querySelector('.sel-detail'),
    zones: selection.querySelector('.sel-zones'),
  };
  const followButton = selection.querySelector('.sel-follow');

  function select(id, pan = false) {
    selected = id && fleet.devices.has(id) ? id : null;
    layer.selected = selected;
    list.select(selected);
    selection.hidden = !selected;
    if (!selected) follow = false;
    followButton.setAttribute('aria-pressed', String(follow));
    const d = selected ? fleet.devices.get(selected) : null;
    if (d && d.fix && pan) map.panTo([d.fix.lat, d.fix.lon], { animate: false });
    updateSelection();
    layer.request(true);
  }

  function updateSelection() {
    const d = selected ? fleet.devices.get(selected) : null;
    if (!d) return;
    const now = fleet.now();
    const state = fleet.state(d, now);
    selectionFields.name.textContent = d.id;
    selectionFields.state.textContent = state === 'stale' ? 'stale: no recent fix' : state;
    selection.dataset.state = state;
    selectionFields.detail.textContent = d.fix
      ? `${kmh(d.speed)} · ${ago(now - d.t)} · ${d.fix.lat.toFixed(5)}, ${d.fix.lon.toFixed(5)}`
      : 'no fix';
    const zones = [...d.zones].map(([zid, z]) => fleet.fenceName(zid, z.name));
    selectionFields.zones.textContent = zones.length ? `In ${zones.join(', ')}` : '';
  }

  followButton.addEventListener('click', () => {
    follow = !follow;
    followButton.setAttribute('aria-pressed', String(follow));
    keepInView();
  });
  selection.querySelector('.sel-history').addEventListener('click', () => {
    if (selected) history.open(selected);
  });
  selection.querySelector('.sel-close').addEventListener('click', () => select(null));

  /** Fits the map to every device with a fix (or the fences when there is none). */
  function fitAll() {
    const L = window.L;
    const bounds = L.latLngBounds([]);
    for (const d of fleet.devices.values()) if (d.fix && d.status !== 'offline') bounds.extend([d.fix.lat, d.fix.lon]);
    if (!bounds.isValid() && fences) {
      const b = fences.getBounds();
      if (b.isValid()) bounds.extend(b);
    }
    if (!bounds.isValid()) return;
    // In kiosk mode the event ticker covers the lower right corner.
    const ticker = kiosk ? document.getElementById('ticker').getBoundingClientRect() : null;
    map.fitBounds(bounds, {
      paddingTopLeft: kiosk ? [60, 60] : [40, 40],
      paddingBottomRight: ticker && ticker.width ? [ticker.width + 40, 60] : [40, 40],
      maxZoom: 17,
      animate: false,
    });
  }
  document.querySelector('.fit-all').addEventListener('click', () => {
    follow = false;
    followButton.setAttribute('aria-pressed', 'false');
    fitAll();
  });
  document.querySelector('.theme-toggle').addEventListener('click', () => {
    body.dataset.theme = body.dataset.theme === 'dark' ? 'light' : 'dark';
    try {
      window.localStorage.setItem('fixgate-theme', body.dataset.theme);
    } catch {
      // not saved: fine
    }
    layer.setTheme(themeColours());
  });

  /** Keeps the followed vehicle in the middle part of the view. */
  function keepInView() {
    if (!follow || !selected) return;
    const d = fleet.devices.get(selected);
    if (!d || !d.fix) return;
    const p = map.latLngToContainerPoint([d.fix.lat, d.fix.lon]);
    const size = map.getSize();
    if (p.x < size.x * 0.25 || p.x > size.x * 0.75 || p.y < size.y * 0.25 || p.y > size.y * 0.75) {
      map.panTo([d.fix.lat, d.fix.lon], { animate: false });
    }
  }

  // Fences: retried while the gateway has none loaded (503), re-read every
  // minute (a SIGHUP reloads them on the gateway).
  const fenceNames = fleet.fenceNames;
  async function loadFences() {
    const backoff = new Backoff(1000, 30000);
    for (;;) {
      try {
        const response = await fetch(api('/api/geofences'), { cache: 'no-store' });
        if (response.ok) {
          const text = await response.text();
          if (text !== fencesText) {
            fencesText = text;
            fences = drawFences(map, JSON.parse(text), fenceNames, fences);
            body.dataset.fences = String(fenceNames.size);
            list.render();
          }
          await sleep(60000);
          backoff.reset();
          continue;
        }
      } catch {
        // retried below
      }
      await sleep(backoff.delay());
    }
  }
  loadFences();

  const counters = document.querySelectorAll('[data-count]');
  /** The once-a-second update of everything that shows time ("12 s ago", stale states). */
  function refresh() {
    list.render();
    updateSelection();
    keepInView();
    const counts = summary(fleet);
    for (const node of counters) {
      const text = String(counts[node.dataset.count] ?? 0);
      if (node.textContent !== text) node.textContent = text;
    }
    layer.request();
  }

  let fitted = false;
  const feed = new Feed({
    quietMs: numberParam('stuck', 20) * 1000,
    onSnapshot: (snapshot) => {
      if (Number.isFinite(snapshot.serverDate)) {
        const skew = snapshot.serverDate - snapshot.receivedAt;
        // The Date header has whole seconds: only a real difference counts.
        fleet.skew = Math.abs(skew) > 2000 ? skew : 0;
      }
      fleet.replaceAll(snapshot);
      if (!fitted && !Array.isArray(config.center) && fleet.devices.size > 0) {
        fitAll();
        fitted = true;
      }
      body.dataset.ready = '1';
      refresh();
      layer.request(true);
    },
    onEvent: (kind, data, seq, live) => {
      if (kind === 'position') {
        if (fleet.position(data, seq)) layer.request();
        if (!fitted && !Array.isArray(config.center)) {
          fitAll();
          fitted = true;
        }
      } else if (kind === 'status') {
        fleet.status(data, seq, live);
        layer.request();
      } else if (kind === 'geofence') {
        fleet.geofence(data, seq);
      }
    },
    onReset: () => {
      // The snapshot that follows replaces the devices; nothing to drop here.
    },
    onState: (state) => {
      body.dataset.connection = state;
      const words = {
        connecting: 'connecting', live: 'live', reconnecting: 'reconnecting', resyncing: 'resyncing',
      };
      document.querySelector('.connection-text').textContent = words[state] || state;
    },
  });
  feed.start();

  // Panels: the log four times a second, the rest once a second.
  setInterval(() => {
    log.flush();
    ticker.flush();
  }, 250);
  setInterval(refresh, 1000);
  if (kiosk) {
    setInterval(() => {
      if (!follow) fitAll();
    }, 30000);
  }

  const statsBox = document.getElementById('stats');
  statsBox.hidden = !params.has('stats');
  /** Mirrors the page's state into data attributes of <body>. */
  function mirror() {
    const s = feed.stats;
    const draw = layer.drawStats();
    const values = {
      positionsReceived: s.positions,
      snapshotPositions: s.snapshotPositions,
      duplicates: s.duplicates,
      resets: s.resets,
      reconnects: s.reconnects,
      stuckReopens: s.stuck,
      refused: s.refused,
      devices: fleet.devices.size,
      lastEventId: feed.lastId,
      visible: layer.visible,
      markers: layer.individual,
      clusters: layer.clusters.length,
      logEntries: log.total,
      logShown: log.shown,
      drawMedianMs: draw.median.toFixed(2),
      errors,
      cspViolations: violations,
    };
    // Frame timing, while it is measured (`?stats` or meter.start()).
    const r = meter.running ? meter.result(600) : null;
    if (r && r.frames) {
      values.frameMedianMs = r.median_ms.toFixed(1);
      values.fpsMean = r.fps_mean.toFixed(1);
      values.framesDropped = r.dropped;
    }
    for (const [key, value] of Object.entries(values)) {
      const text = String(value);
      if (body.dataset[key] !== text) body.dataset[key] = text;
    }
    if (!statsBox.hidden && r) {
      statsBox.textContent = r.frames
        ? `${r.fps_median.toFixed(0)} fps · frame ${r.median_ms.toFixed(1)} ms · draw ${draw.median.toFixed(1)} ms · ${fleet.devices.size} devices`
        : 'measuring…';
    }
  }
  setInterval(mirror, 500);
  mirror();

  // For tests, monitors and the benchmarks.
  window.fixgateScreen = {
    fleet, feed, layer, map, history, meter, log,
    drawn: (id) => layer.drawn(id),
    markerAt: (id) => layer.markerAt(id),
    select,
    fitAll,
    stats: () => ({ ...feed.stats, devices: fleet.devices.size, draw: layer.drawStats(), frames: meter.result(), errors, violations }),
  };
}

main().catch((err) => {
  errors += 1;
  const note = document.querySelector('.basemap-note');
  if (note) note.textContent = `The screen failed to start: ${err && err.message ? err.message : err}`;
  body.dataset.connection = 'failed';
});
