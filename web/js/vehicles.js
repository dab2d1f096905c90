// Every vehicle on one canvas over the map, drawn by hand: a Leaflet marker
// per vehicle is a DOM node per vehicle, and a thousand of them moving once a
// second keep a Pi's main thread busy with style and layout.
//
// Cost is bounded per frame, not per fix: the feed only updates the model
// (latest fix per device) and asks for a redraw; redraws are coalesced to at
// most one per animation frame, and for large fleets to a few per second
// (fixes arrive at 1 Hz, so faster redraws show nothing new). Vehicles off
// screen are skipped (culling); when many are on screen they are gathered
// into grid clusters; labels and trails are drawn only while they are few
// enough to read.

const COLOURS = {
  moving: '#16a34a',
  stopped: '#2563eb',
  stale: '#d97706',
  offline: '#6b7280',
};
const STATES = ['offline', 'stale', 'stopped', 'moving'];
const WEB_MERCATOR_MAX_LAT = 85.0511287798;

/** x of a longitude in world pixels at `scale` (256 × 2^zoom), as Leaflet projects. */
function worldX(lon, scale) {
  return ((lon + 180) / 360) * scale;
}

/** y of a latitude in world pixels at `scale`, as Leaflet's spherical Mercator. */
function worldY(lat, scale) {
  const clamped = Math.max(-WEB_MERCATOR_MAX_LAT, Math.min(WEB_MERCATOR_MAX_LAT, lat));
  const sin = Math.sin((clamped * Math.PI) / 180);
  const y = Math.log((1 + sin) / (1 - sin)) / 2; // Mercator y of a unit sphere
  return (0.5 - y / (2 * Math.PI)) * scale;
}

export class VehicleLayer {
  /**
   * @param {L.Map} map
   * @param {import('./fleet.js').Fleet} fleet
   * @param {object} o
   * @param {boolean} o.kiosk  larger markers and type
   * @param {number} o.clusterAbove  cluster when more vehicles than this are on screen (0: never)
   * @param {(id: string|null) => void} o.onSelect
   */
  constructor(map, fleet, { kiosk = false, clusterAbove = 300, onSelect = () => {} } = {}) {
    this.map = map;
    this.fleet = fleet;
    this.kiosk = kiosk;
    this.clusterAbove = clusterAbove;
    this.onSelect = onSelect;
    this.selected = null;
    this.frame = 0;
    this.pending = 0; // requestAnimationFrame handle
    this.timer = 0; // setTimeout handle of a capped redraw
    this.lastDraw = 0;
    this.urgent = false;
    this.clusters = [];
    this.drawMs = new Float64Array(120);
    this.drawCount = 0;
    this.visible = 0;
    this.individual = 0;
    this.firstMarkerAt = 0;
    this.sprites = new Map();
    this.theme = { text: '#111827', halo: 'rgba(255,255,255,0.85)', outline: '#ffffff' };

    const canvas = document.createElement('canvas');
    canvas.className = 'vehicle-canvas';
    map.getContainer().appendChild(canvas);
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.resize();
    map.on('resize', () => {
      this.resize();
      this.request(true);
    });
    // Panning and zooming redraw at once, whatever the fleet's size: the
    // map must not lag the user's finger.
    map.on('move zoom viewreset', () => this.request(true));
    map.on('click', (e) => this.click(e.containerPoint));
    document.addEventListener('visibilitychange', () => this.request(true));
  }

  setTheme(theme) {
    this.theme = theme;
    this.sprites = new Map(); // the outline colour changed
    this.request(true);
  }

  resize() {
    const size = this.map.getSize();
    const dpr = window.devicePixelRatio || 1;
    this.width = size.x;
    this.height = size.y;
    this.canvas.width = Math.max(1, Math.round(size.x * dpr));
    this.canvas.height = Math.max(1, Math.round(size.y * dpr));
    this.canvas.style.width = `${size.x}px`;
    this.canvas.style.height = `${size.y}px`;
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.sprites = new Map(); // drawn for the old pixel ratio
  }

  /** The least time between two redraws for data alone, by fleet size. */
  minInterval() {
    const n = this.fleet.devices.size;
    if (n <= 300) return 0; // every frame
    if (n <= 2000) return 100;
    return 250;
  }

  /**
   * Asks for a redraw: on the next animation frame when `urgent` (the view
   * moved) or when the fleet is small, else no sooner than the cap allows.
   */
  request(urgent = false) {
    if (urgent) this.urgent = true;
    if (this.pending) return;
    const wait = this.urgent ? 0 : this.minInterval() - (performance.now() - this.lastDraw);
    if (wait > 0) {
      if (!this.timer) {
        this.timer = setTimeout(() => {
          this.timer = 0;
          this.schedule();
        }, wait);
      }
      return;
    }
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.urgent = false;
      this.draw();
    });
  }

  /** Redraws everything. */
  draw() {
    const started = performance.now();
    this.lastDraw = started;
    const { ctx, map, fleet } = this;
    ctx.clearRect(0, 0, this.width, this.height);
    this.frame += 1;
    const frame = this.frame;
    const zoom = map.getZoom();
    const scale = 256 * 2 ** zoom;
    const origin = map.getPixelOrigin();
    const corner = map.containerPointToLayerPoint([0, 0]);
    const ox = origin.x + corner.x;
    const oy = origin.y + corner.y;
    const w = this.width;
    const h = this.height;
    const margin = 24;
    const now = fleet.now();

    // Project and cull.
    const onScreen = [];
    for (const d of fleet.devices.values()) {
      if (!d.fix) continue;
      const x = worldX(d.fix.lon, scale) - ox;
      const y = worldY(d.fix.lat, scale) - oy;
      if (x < -margin || y < -margin || x > w + margin || y > h + margin) continue;
      d.x = x;
      d.y = y;
      d.state = fleet.state(d, now);
      if (d.state === 'nofix') continue;
      onScreen.push(d);
    }
    this.visible = onScreen.length;

    // Cluster when there are too many to tell apart, unless zoomed right in.
    let singles = onScreen;
    this.clusters = [];
    if (this.clusterAbove > 0 && onScreen.length > this.clusterAbove && zoom < 17) {
      const cell = this.kiosk ? 72 : 56;
      const cells = new Map();
      for (const d of onScreen) {
        const key = Math.floor(d.x / cell) * 65536 + Math.floor(d.y / cell);
        let c = cells.get(key);
        if (!c) {
          c = { n: 0, x: 0, y: 0, members: [], moving: 0, stopped: 0, stale: 0, offline: 0 };
          cells.set(key, c);
        }
        c.n += 1;
        c.x += d.x;
        c.y += d.y;
        c[d.state] += 1;
        c.members.push(d);
      }
      singles = [];
      for (const c of cells.values()) {
        if (c.n === 1 || c.members.includes(this.selectedDevice())) {
          singles.push(...c.members);
        } else {
          c.x /= c.n;
          c.y /= c.n;
          this.clusters.push(c);
        }
      }
    }
    this.individual = singles.length;

    const selected = this.selectedDevice();
    const trails = singles.length <= 400 || zoom >= 16;
    if (trails) this.drawTrails(singles, scale, ox, oy, now);
    else if (selected && selected.x !== undefined) this.drawTrails([selected], scale, ox, oy, now);
    this.drawClusters();
    this.drawMarkers(singles, frame);
    if (singles.length <= (this.kiosk ? 120 : 200) || zoom >= 17) this.drawLabels(singles);
    if (selected && selected.drawnFrame === frame) this.drawSelection(selected);

    // Time to first marker, from navigation start (for the benchmarks).
    if (!this.firstMarkerAt && (singles.length > 0 || this.clusters.length > 0)) {
      this.firstMarkerAt = performance.now();
    }
    const took = performance.now() - started;
    this.drawMs[this.drawCount % this.drawMs.length] = took;
    this.drawCount += 1;
  }

  drawTrails(devices, scale, ox, oy, now) {
    const { ctx } = this;
    const since = now - this.fleet.trailMs;
    ctx.lineWidth = this.kiosk ? 3 : 2;
    ctx.lineJoin = 'round';
    ctx.globalAlpha = 0.45;
    // One path per colour: a stroke per trail would cost a state change each.
    for (const state of STATES) {
      ctx.beginPath();
      let any = false;
      for (const d of devices) {
        if (d.state !== state || !d.trail || d.trail.length < 2) continue;
        let first = true;
        d.trail.eachSince(since, (lat, lon) => {
          const x = worldX(lon, scale) - ox;
          const y = worldY(lat, scale) - oy;
          if (first) ctx.moveTo(x, y);
          else ctx.lineTo(x, y);
          first = false;
        });
        any = true;
      }
      if (any) {
        ctx.strokeStyle = COLOURS[state];
        ctx.stroke();
      }
    }
    ctx.globalAlpha = 1;
  }

  drawClusters() {
    const { ctx } = this;
    if (this.clusters.length === 0) return;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.font = `bold ${this.kiosk ? 16 : 12}px system-ui, sans-serif`;
    for (const c of this.clusters) {
      const r = (this.kiosk ? 14 : 11) + Math.min(14, Math.log2(c.n) * 2.5);
      // The share of each state as a ring, the count in the middle.
      let angle = -Math.PI / 2;
      for (const state of STATES) {
        if (!c[state]) continue;
        const sweep = (c[state] / c.n) * Math.PI * 2;
        ctx.beginPath();
        ctx.moveTo(c.x, c.y);
        ctx.arc(c.x, c.y, r, angle, angle + sweep);
        ctx.closePath();
        ctx.fillStyle = COLOURS[state];
        ctx.fill();
        angle += sweep;
      }
      ctx.beginPath();
      ctx.arc(c.x, c.y, r * 0.68, 0, Math.PI * 2);
      ctx.fillStyle = this.theme.outline;
      ctx.fill();
      ctx.fillStyle = this.theme.text;
      ctx.fillText(String(c.n), c.x, c.y + 0.5);
    }
  }

  /**
   * The marker of a state and heading as a small pre-drawn image: a dot in
   * the state's colour with an outline and, when the heading is known, a
   * nose pointing that way (36 headings, 10 degrees apart). One drawImage a
   * vehicle is far cheaper than stroking one path of thousands of arcs,
   * which in software rendering costs tens of milliseconds.
   */
  sprite(state, course) {
    const bucket = Number.isFinite(course) && state !== 'offline'
      ? Math.round((((course % 360) + 360) % 360) / 10) % 36
      : -1;
    const key = `${state}:${bucket}`;
    let sprite = this.sprites.get(key);
    if (sprite) return sprite;
    const dpr = window.devicePixelRatio || 1;
    const r = this.kiosk ? 8 : 6;
    const half = Math.ceil(r * 2.4 + 2); // room for the nose and the outline
    const canvas = document.createElement('canvas');
    canvas.width = Math.ceil(half * 2 * dpr);
    canvas.height = canvas.width;
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, half * dpr, half * dpr);
    ctx.fillStyle = COLOURS[state];
    if (bucket >= 0) {
      // A nose from the dot towards the heading: with its base as wide as
      // the dot, dot and nose read as one teardrop pointing the way.
      const a = (bucket * 10 * Math.PI) / 180;
      const sin = Math.sin(a);
      const cos = -Math.cos(a);
      ctx.beginPath();
      ctx.moveTo(sin * r * 2.4, cos * r * 2.4);
      ctx.lineTo(-cos * r, sin * r);
      ctx.lineTo(cos * r, -sin * r);
      ctx.closePath();
      ctx.fill();
    }
    ctx.beginPath();
    ctx.arc(0, 0, r, 0, Math.PI * 2);
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = this.theme.outline;
    ctx.stroke();
    sprite = { canvas, half };
    this.sprites.set(key, sprite);
    return sprite;
  }

  drawMarkers(devices, frame) {
    const { ctx } = this;
    // Moving vehicles last, on top.
    for (const state of STATES) {
      for (const d of devices) {
        if (d.state !== state) continue;
        const { canvas, half } = this.sprite(state, d.course);
        // Whole pixels: no resampling of the image.
        ctx.drawImage(canvas, Math.round(d.x - half), Math.round(d.y - half), half * 2, half * 2);
        d.drawnFrame = frame;
      }
    }
  }

  drawLabels(devices) {
    const { ctx } = this;
    const size = this.kiosk ? 16 : 12;
    ctx.font = `${size}px system-ui, sans-serif`;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    ctx.lineWidth = 3;
    ctx.strokeStyle = this.theme.halo;
    ctx.fillStyle = this.theme.text;
    // A coarse occupancy grid: a label that would overlap one already drawn
    // is left out rather than drawn unreadably on top.
    const taken = new Set();
    const cellW = 48;
    const cellH = size + 4;
    const offset = (this.kiosk ? 8 : 6) + 5;
    for (const d of devices) {
      const text = d.id.length > 24 ? `${d.id.slice(0, 23)}…` : d.id;
      const x = d.x + offset;
      const y = d.y;
      const cx0 = Math.floor(x / cellW);
      const cx1 = Math.floor((x + text.length * size * 0.6) / cellW);
      const cy = Math.floor(y / cellH);
      let free = true;
      for (let cx = cx0; cx <= cx1 && free; cx += 1) if (taken.has(cx * 4096 + cy)) free = false;
      if (!free) continue;
      for (let cx = cx0; cx <= cx1; cx += 1) taken.add(cx * 4096 + cy);
      // Canvas text: a device id is drawn, never parsed as markup.
      ctx.strokeText(text, x, y);
      ctx.fillText(text, x, y);
    }
  }

  drawSelection(d) {
    const { ctx } = this;
    ctx.beginPath();
    ctx.arc(d.x, d.y, (this.kiosk ? 8 : 6) + 5, 0, Math.PI * 2);
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = this.theme.text;
    ctx.stroke();
  }

  selectedDevice() {
    return this.selected ? this.fleet.devices.get(this.selected) || null : null;
  }

  /** Selects the vehicle or zooms into the cluster under a click. */
  click(point) {
    let best = null;
    let bestDist = (this.kiosk ? 18 : 14) ** 2;
    for (const d of this.fleet.devices.values()) {
      if (d.drawnFrame !== this.frame) continue;
      const dist = (d.x - point.x) ** 2 + (d.y - point.y) ** 2;
      if (dist < bestDist) {
        best = d;
        bestDist = dist;
      }
    }
    if (best) {
      this.onSelect(best.id);
      return;
    }
    for (const c of this.clusters) {
      if ((c.x - point.x) ** 2 + (c.y - point.y) ** 2 < 26 ** 2) {
        this.map.setView(this.map.containerPointToLatLng([c.x, c.y]), Math.min(this.map.getMaxZoom(), this.map.getZoom() + 2));
        return;
      }
    }
    this.onSelect(null);
  }

  /** Whether a device was drawn as a marker of its own in the last frame. */
  drawn(id) {
    const d = this.fleet.devices.get(id);
    return Boolean(d && d.drawnFrame === this.frame);
  }

  /** The device's marker position in container pixels, if drawn. */
  markerAt(id) {
    const d = this.fleet.devices.get(id);
    return d && d.drawnFrame === this.frame ? { x: d.x, y: d.y, state: d.state } : null;
  }

  /** Median and 95th percentile of the recent draws, in ms. */
  drawStats() {
    const n = Math.min(this.drawCount, this.drawMs.length);
    if (n === 0) return { median: 0, p95: 0, draws: 0 };
    const sorted = Array.from(this.drawMs.subarray(0, n)).sort((a, b) => a - b);
    return {
      median: sorted[Math.floor(n / 2)],
      p95: sorted[Math.min(n - 1, Math.floor(n * 0.95))],
      draws: this.drawCount,
    };
  }
}
