// The connection to the gateway: a snapshot of `/api/devices`, then the
// `/events` stream from that snapshot's sequence number on, so that nothing
// falls between the two.
//
// Reconnecting is ours, not EventSource's: EventSource gives up for good on
// any non-200 answer (the feed's 503 when it is full, a proxy's 502 while
// the gateway restarts), and its own retries cannot be counted or backed
// off. So on any error the stream is closed and reopened after a back-off
// with `?last_event_id=` the last id received: the gateway replays what was
// missed from its store, or answers `event: reset` when it no longer holds
// it (or the store was replaced); then the device states are reloaded.
//
// A stream can also stall without an error (a NAT or proxy that silently
// dropped the connection while the socket looks open): keep-alive comments
// are invisible to EventSource, so when no event has come for a while the
// page asks `/healthz` for the gateway's head; if the head has moved past
// the last id and stays past it on the next check, the stream is stuck and
// is reopened.

import { Backoff, api, sleep } from './util.js';

export class Feed {
  /**
   * @param {object} o
   * @param {(snapshot: object) => void} o.onSnapshot  a `/api/devices` body
   * @param {(kind: string, data: object, seq: number, live: boolean) => void} o.onEvent
   * @param {(reset: object) => void} o.onReset
   * @param {(state: string) => void} o.onState  "connecting" | "live" | "reconnecting" | "resyncing"
   * @param {number} o.quietMs  no event for this long makes the page check the head
   */
  constructor({ onSnapshot, onEvent, onReset, onState, quietMs = 20000 }) {
    this.onSnapshot = onSnapshot;
    this.onEvent = onEvent;
    this.onReset = onReset;
    this.onState = onState;
    this.quietMs = quietMs;
    this.backoff = new Backoff(500, 15000);
    this.es = null;
    this.state = 'connecting';
    /** The last sequence number received (the snapshot's, a reset's or an event's). */
    this.lastId = 0;
    /** While replaying a reset's id-less device states. */
    this.resetId = -1;
    this.lastEventAt = 0;
    this.openedAt = 0;
    this.suspectHead = 0;
    this.reconnectTimer = 0;
    this.stats = {
      positions: 0, // position events with an id: each stored fix once
      snapshotPositions: 0, // id-less positions of a reset
      duplicates: 0, // events with an id at or below the last one (should stay 0)
      statuses: 0,
      geofences: 0,
      resets: 0,
      reconnects: 0,
      stuck: 0,
      refused: 0, // non-200 answers to /api/devices or /events
      snapshots: 0,
    };
    this.watchdog = setInterval(() => this.checkStuck(), Math.max(1000, Math.min(5000, quietMs / 2)));
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  }

  /** Loads the snapshot (retrying with back-off), then opens the stream. */
  async start() {
    this.setState('connecting');
    const snapshot = await this.loadSnapshot();
    this.lastId = Number.isFinite(snapshot.seq) ? snapshot.seq : 0;
    this.onSnapshot(snapshot);
    this.open();
  }

  /** `/api/devices`, retried with back-off until it answers 200 with JSON. */
  async loadSnapshot() {
    const backoff = new Backoff(500, 10000);
    for (;;) {
      try {
        const response = await fetch(api('/api/devices'), { cache: 'no-store' });
        if (response.ok) {
          const body = await response.json();
          const date = Date.parse(response.headers.get('Date') || '');
          this.stats.snapshots += 1;
          return { ...body, serverDate: date, receivedAt: Date.now() };
        }
        this.stats.refused += 1;
      } catch {
        // The gateway is down or unreachable: try again below.
      }
      await sleep(backoff.delay());
    }
  }

  open() {
    clearTimeout(this.reconnectTimer);
    if (this.es) this.es.close();
    const es = new EventSource(api(`/events?last_event_id=${encodeURIComponent(String(this.lastId))}`));
    this.es = es;
    this.openedAt = Date.now();
    this.lastEventAt = Date.now();
    this.suspectHead = 0;
    es.onopen = () => {
      this.setState('live');
    };
    es.onerror = () => {
      if (this.es !== es) return;
      // Never let EventSource retry on its own (it would stop for good at
      // a non-200 answer, uncounted): close, and reopen after a back-off.
      es.close();
      this.es = null;
      this.scheduleReconnect();
    };
    for (const kind of ['position', 'status', 'geofence']) {
      es.addEventListener(kind, (e) => this.handle(kind, e));
    }
    es.addEventListener('reset', (e) => this.handleReset(e));
  }

  scheduleReconnect() {
    this.setState('reconnecting');
    // A stream that stayed up for a while was healthy: start backing off
    // afresh.
    if (Date.now() - this.openedAt > 10000) this.backoff.reset();
    const delay = this.backoff.delay();
    this.stats.reconnects += 1;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }

  handle(kind, e) {
    this.lastEventAt = Date.now();
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      return;
    }
    // EventSource keeps the last id for events that carry none, so an
    // event whose id is not above the last one is a reset's device state
    // (while replaying one) or a duplicate.
    const id = Number(e.lastEventId);
    if (Number.isFinite(id) && id > this.lastId) {
      this.lastId = id;
      this.resetId = -1;
      this.backoff.reset();
      if (this.state !== 'live') this.setState('live');
      if (kind === 'position') this.stats.positions += 1;
      if (kind === 'status') this.stats.statuses += 1;
      if (kind === 'geofence') this.stats.geofences += 1;
      this.onEvent(kind, data, id, true);
    } else if (this.resetId >= 0 && id === this.resetId) {
      if (kind === 'position') this.stats.snapshotPositions += 1;
      this.onEvent(kind, data, 0, false);
    } else {
      this.stats.duplicates += 1;
    }
  }

  handleReset(e) {
    this.lastEventAt = Date.now();
    let data = {};
    try {
      data = JSON.parse(e.data);
    } catch {
      // The reset itself is what matters.
    }
    const id = Number(e.lastEventId);
    this.stats.resets += 1;
    this.lastId = Number.isFinite(id) ? id : this.lastId;
    this.resetId = this.lastId;
    this.setState('resyncing');
    this.onReset(data);
    // The stream carries positions and statuses; zones and the devices
    // that are gone come with a fresh snapshot.
    this.loadSnapshot().then((snapshot) => {
      this.onSnapshot(snapshot);
      if (this.es) this.setState('live');
    });
  }

  /** The gateway's head from `/healthz`, or NaN. */
  async head() {
    try {
      const response = await fetch('/healthz', { cache: 'no-store' });
      const body = await response.json();
      return Number.isFinite(body.head) ? body.head : NaN;
    } catch {
      return NaN;
    }
  }

  async checkStuck() {
    if (!this.es || this.es.readyState !== EventSource.OPEN) return;
    if (Date.now() - this.lastEventAt < this.quietMs) {
      this.suspectHead = 0;
      return;
    }
    const head = await this.head();
    if (!Number.isFinite(head) || head <= this.lastId) {
      this.suspectHead = 0;
      return;
    }
    if (this.suspectHead && this.lastId < this.suspectHead) {
      // The head was past us at the last check too, and nothing came since.
      this.stats.stuck += 1;
      this.suspectHead = 0;
      this.open();
      return;
    }
    this.suspectHead = head;
  }
}
