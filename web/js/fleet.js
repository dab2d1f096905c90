// The screen's model: the latest state of every device, short trails and
// the event log. Bounded whatever the feed sends: one entry per device (the
// gateway bounds the devices it tracks), trails of fixed capacity, a log of
// fixed length. Everything else (map, list, log view) reads from here.

import { metres, parseTime } from './util.js';

/** At or above this speed (m/s) a vehicle counts as moving. */
export const MOVING_MPS = 0.5;
/** Points a trail holds at most, and their least spacing in time. */
const TRAIL_CAPACITY = 160;
const TRAIL_SPACING_MS = 2000;

/** A fixed-size ring of a device's recent positions. */
export class Trail {
  constructor(capacity = TRAIL_CAPACITY) {
    this.lat = new Float32Array(capacity);
    this.lon = new Float32Array(capacity);
    this.t = new Float64Array(capacity);
    this.capacity = capacity;
    this.head = 0; // next slot to write
    this.length = 0;
  }
  push(lat, lon, t) {
    if (this.length > 0) {
      const last = (this.head + this.capacity - 1) % this.capacity;
      if (t - this.t[last] < TRAIL_SPACING_MS) {
        // Too close to the last point: move it instead of adding one, so
        // the trail ends at the marker.
        this.lat[last] = lat;
        this.lon[last] = lon;
        return;
      }
    }
    this.lat[this.head] = lat;
    this.lon[this.head] = lon;
    this.t[this.head] = t;
    this.head = (this.head + 1) % this.capacity;
    if (this.length < this.capacity) this.length += 1;
  }
  /** Calls fn(lat, lon) from the newest point back to the oldest at or after `since`. */
  eachSince(since, fn) {
    for (let i = 0; i < this.length; i += 1) {
      const k = (this.head + this.capacity - 1 - i) % this.capacity;
      if (this.t[k] < since) return;
      fn(this.lat[k], this.lon[k]);
    }
  }
}

/** One device as the screen knows it. */
export class Device {
  constructor(id) {
    this.id = id;
    /** The latest live fix: {lat, lon, alt, speed, course, hdop, sats, mode, accuracy}. */
    this.fix = null;
    /** Its time in ms. */
    this.t = NaN;
    /** Sequence number of that fix, when known. */
    this.seq = 0;
    /** Speed in m/s, reported or derived from the last two fixes. */
    this.speed = NaN;
    this.course = NaN;
    /** "online" | "offline" | null, and since when (ms). */
    this.status = null;
    this.since = NaN;
    /** Fences it is in: id -> {name, since}. */
    this.zones = new Map();
    this.trail = null;
  }
}

/** Checks the shape of a position; the feed is outside input. */
function validFix(p) {
  return p && typeof p.device === 'string' && p.device.length > 0
    && Number.isFinite(p.lat) && Number.isFinite(p.lon)
    && Math.abs(p.lat) <= 90 && Math.abs(p.lon) <= 180;
}

export class Fleet {
  constructor({ staleAfterMs = 60000, trailMinutes = 5, logSize = 500 } = {}) {
    /** id -> Device */
    this.devices = new Map();
    this.staleAfterMs = staleAfterMs;
    this.trailMs = trailMinutes * 60000;
    this.logSize = logSize;
    /** The event log, oldest first, at most logSize entries. */
    this.log = [];
    this.logListeners = [];
    /** Fence id -> name, from /api/geofences. */
    this.fenceNames = new Map();
    /** Gateway clock minus ours (ms), from the Date header of a snapshot. */
    this.skew = 0;
    /** Bumped at every change the views show. */
    this.version = 0;
  }

  /** The gateway's "now" in ms. */
  now() {
    return Date.now() + this.skew;
  }

  /** The device, made on first sight. */
  device(id) {
    let d = this.devices.get(id);
    if (!d) {
      d = new Device(id);
      this.devices.set(id, d);
    }
    return d;
  }

  /**
   * Applies a position; `seq` is its feed id (0 for the id-less states of
   * a snapshot). Keeps only the latest fix: an older one (a late, historic
   * fix) leaves the marker where it is. Returns whether it moved the device.
   */
  position(p, seq = 0) {
    if (!validFix(p)) return false;
    const t = parseTime(p.time);
    const d = this.device(p.device);
    if (seq && d.seq >= seq) return false;
    if (d.fix && Number.isFinite(t) && t < d.t) return false;
    let speed = Number.isFinite(p.speed) ? p.speed : NaN;
    let course = Number.isFinite(p.course) ? p.course : NaN;
    if (d.fix && Number.isFinite(t) && (!Number.isFinite(speed) || !Number.isFinite(course))) {
      const dt = (t - d.t) / 1000;
      if (dt > 0 && dt < 60) {
        if (!Number.isFinite(speed)) speed = metres(d.fix.lat, d.fix.lon, p.lat, p.lon) / dt;
        if (!Number.isFinite(course) && speed >= MOVING_MPS) {
          const rad = Math.PI / 180;
          const y = Math.sin((p.lon - d.fix.lon) * rad) * Math.cos(p.lat * rad);
          const x = Math.cos(d.fix.lat * rad) * Math.sin(p.lat * rad)
            - Math.sin(d.fix.lat * rad) * Math.cos(p.lat * rad) * Math.cos((p.lon - d.fix.lon) * rad);
          course = (Math.atan2(y, x) / rad + 360) % 360;
        }
      }
    }
    d.fix = {
      lat: p.lat, lon: p.lon, alt: p.alt, hdop: p.hdop, sats: p.sats,
      mode: p.mode, accuracy: p.accuracy,
    };
    d.t = Number.isFinite(t) ? t : this.now();
    d.speed = speed;
    d.course = course;
    if (seq) d.seq = seq;
    if (!d.trail) d.trail = new Trail();
    d.trail.push(p.lat, p.lon, d.t);
    this.version += 1;
    return true;
  }

  /** Applies a status event; logs it when `log` (a change, not a snapshot's state). */
  status(s, seq = 0, log = true) {
    if (!s || typeof s.device !== 'string' || (s.status !== 'online' && s.status !== 'offline')) return;
    const d = this.device(s.device);
    const t = parseTime(s.time);
    d.status = s.status;
    d.since = t;
    this.version += 1;
    if (log) this.addLog({ kind: s.status, device: s.device, t, seq, historic: false });
  }

  /** Applies a geofence event: zones change on enter and exit; every type is logged. */
  geofence(g, seq = 0) {
    if (!g || typeof g.device !== 'string' || typeof g.fence !== 'string') return;
    const kinds = ['enter', 'exit', 'dwell', 'speeding'];
    if (!kinds.includes(g.type)) return;
    const d = this.device(g.device);
    const t = parseTime(g.time);
    // A late (historic) event tells of the past; the device's zones now are
    // what the live events said.
    if (!g.historic) {
      if (g.type === 'enter') d.zones.set(g.fence, { name: this.fenceNames.get(g.fence), since: t });
      if (g.type === 'exit') d.zones.delete(g.fence);
    }
    this.version += 1;
    this.addLog({
      kind: g.type, device: g.device, fence: g.fence, t, seq,
      historic: g.historic === true,
      since: parseTime(g.since), speed: g.speed, limit: g.limit,
    });
  }

  /** Adds a log entry, dropping the oldest beyond the bound. */
  addLog(entry) {
    this.log.push(entry);
    if (this.log.length > this.logSize) this.log.splice(0, this.log.length - this.logSize);
    for (const fn of this.logListeners) fn(entry);
  }

  /** The name of a fence, or its id. */
  fenceName(id, given) {
    return given || this.fenceNames.get(id) || id;
  }

  /**
   * Replaces every device's state with a snapshot of `/api/devices`: devices
   * it does not name go; a fix newer (by sequence number) than the
   * snapshot's is kept, since the feed may already have delivered it.
   */
  replaceAll(snapshot) {
    const seen = new Set();
    for (const s of Array.isArray(snapshot.devices) ? snapshot.devices : []) {
      if (!s || typeof s.device !== 'string') continue;
      seen.add(s.device);
      const d = this.device(s.device);
      const seq = Number.isFinite(s.seq) ? s.seq : 0;
      if (s.fix && (!d.fix || !seq || seq > d.seq)) {
        d.seq = 0; // let the snapshot's fix in, then record its number
        d.fix = null;
        this.position({ ...s.fix, device: s.device }, 0);
        d.seq = seq;
      }
      if (s.status === 'online' || s.status === 'offline') {
        d.status = s.status;
        d.since = parseTime(s.since);
      }
      d.zones = new Map();
      for (const z of Array.isArray(s.zones) ? s.zones : []) {
        if (z && typeof z.id === 'string') {
          d.zones.set(z.id, { name: typeof z.name === 'string' ? z.name : undefined, since: parseTime(z.since) });
        }
      }
    }
    for (const id of [...this.devices.keys()]) {
      if (!seen.has(id)) this.devices.delete(id);
    }
    this.version += 1;
  }

  /** "offline" | "stale" | "moving" | "stopped" | "nofix" for a device at `now`. */
  state(d, now) {
    if (d.status === 'offline') return 'offline';
    if (!d.fix) return 'nofix';
    if (now - d.t > this.staleAfterMs) return 'stale';
    return d.speed >= MOVING_MPS ? 'moving' : 'stopped';
  }
}
