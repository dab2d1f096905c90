// History playback: a device's track from the gateway's own store
// (`/api/history?format=geojson`: one LineString with a time per coordinate,
// plus Point features for the geofence and status events of the span),
// drawn on the map and played back with a time slider.

import { api, clock, el, parseTime } from './util.js';

const SPEEDS = [1, 10, 60, 300];

/** `YYYY-MM-DDTHH:MM` in local time, for a datetime-local input. */
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

export class History {
  /**
   * @param {HTMLElement} root  the history section (hidden until opened)
   * @param {L.Map} map
   */
  constructor(root, map, fleet) {
    this.root = root;
    this.map = map;
    this.fleet = fleet;
    this.device = null;
    this.layers = null;
    this.marker = null;
    this.times = [];
    this.latlngs = [];
    this.timer = 0;
    this.speed = 10;
    this.playT = 0;

    this.title = root.querySelector('.history-device');
    this.from = root.querySelector('input[name=from]');
    this.to = root.querySelector('input[name=to]');
    this.status = root.querySelector('.history-status');
    this.slider = root.querySelector('input[type=range]');
    this.at = root.querySelector('.history-at');
    this.playButton = root.querySelector('.history-play');
    this.speedSelect = root.querySelector('.history-speed');
    for (const s of SPEEDS) {
      const option = el('option', '', `${s}×`);
      option.value = String(s);
      if (s === this.speed) option.selected = true;
      this.speedSelect.appendChild(option);
    }
    root.querySelector('form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.load();
    });
    root.querySelector('.history-close').addEventListener('click', () => this.close());
    this.slider.addEventListener('input', () => {
      this.pause();
      this.show(Number(this.slider.value));
    });
    this.playButton.addEventListener('click', () => (this.timer ? this.pause() : this.play()));
    this.speedSelect.addEventListener('change', () => {
      this.speed = Number(this.speedSelect.value) || 10;
    });
  }

  /** Opens the panel for a device, with the last hour as the span. */
  open(device) {
    this.close();
    this.device = device;
    this.title.textContent = device;
    const now = this.fleet.now();
    this.from.value = localInput(now - 3600000);
    this.to.value = localInput(now);
    this.root.hidden = false;
    this.root.dataset.state = 'open';
    this.setStatus('');
  }

  setStatus(text) {
    this.status.textContent = text;
  }

  /** Fetches the track and draws it. */
  async load() {
    if (!this.device) return;
    this.clearTrack();
    const from = new Date(this.from.value);
    const to = new Date(this.to.value);
    if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) {
      this.setStatus('Choose a start and an end.');
      return;
    }
    const params = new URLSearchParams({
      device: this.device, from: from.toISOString(), to: to.toISOString(), format: 'geojson',
    });
    this.root.dataset.state = 'loading';
    this.setStatus('Loading…');
    let response;
    try {
      response = await fetch(api(`/api/history?${params}`), { cache: 'no-store' });
    } catch {
      this.root.dataset.state = 'error';
      this.setStatus('The gateway did not answer.');
      return;
    }
    if (response.status === 404) {
      this.root.dataset.state = 'unavailable';
      this.setStatus('This gateway serves no history.');
      return;
    }
    if (!response.ok) {
      // A 400 says why (the span beyond the limit, a bad time): show it as text.
      const reason = (await response.text()).slice(0, 300);
      this.root.dataset.state = 'error';
      this.setStatus(`The gateway refused: ${reason || response.status}`);
      return;
    }
    let collection;
    try {
      collection = await response.json();
    } catch {
      this.root.dataset.state = 'error';
      this.setStatus('The answer was not GeoJSON.');
      return;
    }
    this.draw(collection);
  }

  draw(collection) {
    const L = window.L;
    const features = Array.isArray(collection && collection.features) ? collection.features : [];
    const line = features.find((f) => f && f.geometry && f.geometry.type === 'LineString');
    const coords = line && Array.isArray(line.geometry.coordinates) ? line.geometry.coordinates : [];
    const times = line && line.properties && Array.isArray(line.properties.times) ? line.properties.times : [];
    this.latlngs = [];
    this.times = [];
    for (let i = 0; i < coords.length; i += 1) {
      const c = coords[i];
      if (!Array.isArray(c) || !Number.isFinite(c[0]) || !Number.isFinite(c[1])) continue;
      this.latlngs.push([c[1], c[0]]);
      this.times.push(parseTime(times[i]));
    }
    this.layers = L.featureGroup().addTo(this.map);
    const events = features.filter((f) => f && f.geometry && f.geometry.type === 'Point');
    for (const f of events) {
      const [lon, lat] = f.geometry.coordinates || [];
      if (!Number.isFinite(lat) || !Number.isFinite(lon)) continue;
      const p = f.properties || {};
      const words = [p.type || p.status || p.event || 'event', p.fence || '', p.time ? clock(parseTime(p.time)) : '']
        .filter(Boolean).join(' ');
      L.circleMarker([lat, lon], { radius: 5, color: '#7c3aed', weight: 2, fillOpacity: 0.9 })
        .bindTooltip(el('span', '', words))
        .addTo(this.layers);
    }
    this.root.dataset.points = String(this.latlngs.length);
    this.root.dataset.events = String(events.length);
    if (this.latlngs.length === 0) {
      this.root.dataset.state = 'empty';
      this.setStatus('No fixes in this span.');
      return;
    }
    L.polyline(this.latlngs, { color: '#7c3aed', weight: 3, opacity: 0.85 }).addTo(this.layers);
    this.marker = L.circleMarker(this.latlngs[0], {
      radius: 8, color: '#ffffff', weight: 2, fillColor: '#7c3aed', fillOpacity: 1,
    }).addTo(this.layers);
    this.map.fitBounds(this.layers.getBounds(), { padding: [40, 40], maxZoom: 17 });
    this.slider.max = String(this.latlngs.length - 1);
    this.slider.value = '0';
    this.slider.disabled = false;
    this.playButton.disabled = false;
    this.root.dataset.state = 'loaded';
    this.setStatus(`${this.latlngs.length} fixes, ${events.length} events`);
    this.show(0);
  }

  /** Moves the playback marker to fix `i`. */
  show(i) {
    if (!this.marker || this.latlngs.length === 0) return;
    const k = Math.max(0, Math.min(this.latlngs.length - 1, i));
    this.marker.setLatLng(this.latlngs[k]);
    this.slider.value = String(k);
    this.root.dataset.index = String(k);
    const t = this.times[k];
    this.playT = Number.isFinite(t) ? t : 0;
    this.at.textContent = Number.isFinite(t) ? `${new Date(t).toLocaleDateString()} ${clock(t)}` : `#${k + 1}`;
  }

  /** Plays from the slider's position at `speed` × real time. */
  play() {
    if (this.latlngs.length === 0) return;
    if (Number(this.slider.value) >= this.latlngs.length - 1) this.show(0);
    this.playButton.textContent = 'Pause';
    const step = 100;
    this.timer = setInterval(() => {
      let k = Number(this.slider.value);
      if (Number.isFinite(this.playT) && this.playT > 0 && Number.isFinite(this.times[k])) {
        const target = this.playT + step * this.speed;
        while (k < this.latlngs.length - 1 && this.times[k + 1] <= target) k += 1;
        this.show(k);
        this.playT = target;
      } else {
        this.show(k + 1); // no times: one fix per tick
      }
      if (k >= this.latlngs.length - 1) this.pause();
    }, step);
  }

  pause() {
    clearInterval(this.timer);
    this.timer = 0;
    this.playButton.textContent = 'Play';
  }

  clearTrack() {
    this.pause();
    if (this.layers) this.layers.remove();
    this.layers = null;
    this.marker = null;
    this.latlngs = [];
    this.times = [];
    this.slider.disabled = true;
    this.playButton.disabled = true;
    this.at.textContent = '';
  }

  close() {
    this.clearTrack();
    this.root.hidden = true;
    this.root.dataset.state = 'closed';
    this.device = null;
  }
}
