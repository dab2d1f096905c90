// Small helpers shared by the screen's modules. Nothing here touches the DOM
// with markup: device ids, fence names and every other value that comes from
// the gateway are outside input and only ever reach the page as text.

/** Creates an element with a class and text content (never markup). */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** Escapes text for the few Leaflet APIs that take markup (attribution). */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

/** "now", "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function ago(ms) {
  if (!Number.isFinite(ms)) return '–';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 2) return 'now';
  if (s < 90) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 36) return `${h} h ago`;
  return `${Math.round(h / 24)} d ago`;
}

/** A duration in words: "45 s", "2 min", "1 h 5 min". */
export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** m/s as a rounded "km/h" string, or "–". */
export function kmh(mps) {
  return Number.isFinite(mps) ? `${Math.round(mps * 3.6)} km/h` : '–';
}

/** HH:MM:SS of a time in ms, local time. */
export function clock(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Parses an RFC 3339 time to ms, or NaN. */
export function parseTime(text) {
  return typeof text === 'string' ? Date.parse(text) : NaN;
}

/** Resolves after `ms`. */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Delays for retries: doubling from `first` up to `max`, each with ±20 %
 * jitter so that a room of screens does not reconnect in step.
 */
export class Backoff {
  constructor(first = 500, max = 15000) {
    this.first = first;
    this.max = max;
    this.next = first;
  }
  /** The next delay in ms. */
  delay() {
    const base = this.next;
    this.next = Math.min(this.max, this.next * 2);
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }
  reset() {
    this.next = this.first;
  }
}

/** Great-circle distance in metres (haversine). */
export function metres(lat1, lon1, lat2, lon2) {
  const r = 6371008.8;
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2
    + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * r * Math.asin(Math.min(1, Math.sqrt(a)));
}

// A read token the page was opened with (`/?access_token=…`, for screens on
// the LAN where anonymous reads are off) goes with every call it makes to
// the gateway's APIs; the page itself holds no data and needs none.
const accessToken = new URLSearchParams(window.location.search).get('access_token');

/** `path` on this gateway, with the page's access token when it has one. */
export function api(path) {
  if (!accessToken) return path;
  const sep = path.includes('?') ? '&' : '?';
  return `${path}${sep}access_token=${encodeURIComponent(accessToken)}`;
}
