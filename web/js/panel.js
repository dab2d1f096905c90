// Beside the map: the device list and the event log. Both are bounded in
// DOM size whatever the fleet: the list draws only the rows in view (a
// thousand rows rebuilt every second would cost more than the map), the log
// keeps a fixed number of entries. Every value is set with textContent.

import { ago, clock, duration, el, kmh } from './util.js';

const STATE_ORDER = { moving: 0, stopped: 1, stale: 2, offline: 3, nofix: 4 };
const STATE_WORDS = {
  moving: 'moving', stopped: 'stopped', stale: 'stale', offline: 'offline', nofix: 'no fix',
};
const ROW_HEIGHT = 30;

/** Sets a node's text only when it changed (no layout work otherwise). */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export class DeviceList {
  /**
   * @param {HTMLElement} root  the list's section
   * @param {import('./fleet.js').Fleet} fleet
   */
  constructor(root, fleet, { onSelect }) {
    this.fleet = fleet;
    this.onSelect = onSelect;
    this.sort = 'name';
    this.query = '';
    this.selected = null;
    this.rows = [];
    this.items = [];

    this.search = root.querySelector('input[type=search]');
    this.count = root.querySelector('.device-count');
    this.viewport = root.querySelector('.list-viewport');
    this.spacer = el('div', 'list-spacer');
    this.viewport.appendChild(this.spacer);
    this.search.addEventListener('input', () => {
      this.query = this.search.value.trim().toLowerCase();
      this.render();
    });
    for (const button of root.querySelectorAll('[data-sort]')) {
      button.addEventListener('click', () => {
        this.sort = button.dataset.sort;
        for (const b of root.querySelectorAll('[data-sort]')) {
          b.setAttribute('aria-sort', b === button ? 'ascending' : 'none');
        }
        this.render();
      });
    }
    this.viewport.addEventListener('scroll', () => this.paint(), { passive: true });
    this.viewport.addEventListener('click', (e) => {
      const row = e.target.closest('.device-row');
      if (row && row.dataset.device) this.onSelect(row.dataset.device);
    });
  }

  /** Filters and sorts the devices, then paints the rows in view. */
  render() {
    const now = this.fleet.now();
    const q = this.query;
    const items = [];
    for (const d of this.fleet.devices.values()) {
      if (q) {
        let hit = d.id.toLowerCase().includes(q);
        if (!hit) {
          for (const [id, z] of d.zones) {
            if (this.fleet.fenceName(id, z.name).toLowerCase().includes(q)) hit = true;
          }
        }
        if (!hit) continue;
      }
      items.push({ d, state: this.fleet.state(d, now) });
    }
    const byName = (a, b) => (a.d.id < b.d.id ? -1 : a.d.id > b.d.id ? 1 : 0);
    const sorters = {
      name: byName,
      state: (a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state] || byName(a, b),
      seen: (a, b) => (b.d.t || 0) - (a.d.t || 0) || byName(a, b),
      speed: (a, b) => (b.d.speed || 0) - (a.d.speed || 0) || byName(a, b),
    };
    items.sort(sorters[this.sort] || byName);
    this.items = items;
    this.now = now;
    setText(this.count, q ? `${items.length} of ${this.fleet.devices.size}` : String(items.length));
    this.spacer.style.height = `${items.length * ROW_HEIGHT}px`;
    this.paint();
  }

  /** Fills the pooled row elements for the rows in view. */
  paint() {
    const top = this.viewport.scrollTop;
    const height = this.viewport.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - 4);
    const last = Math.min(this.items.length, Math.ceil((top + height) / ROW_HEIGHT) + 4);
    const needed = last - first;
    while (this.rows.length < needed) this.rows.push(this.makeRow());
    for (let i = 0; i < this.rows.length; i += 1) {
      const row = this.rows[i];
      const item = this.items[first + i];
      if (i >= needed || !item) {
        // A spare row names no device: a device that is gone must not
        // linger in the DOM, hidden or not.
        if (!row.hidden) {
          row.hidden = true;
          delete row.dataset.device;
          delete row.dataset.state;
        }
        continue;
      }
      row.hidden = false;
      this.fill(row, item, first + i);
    }
  }

  makeRow() {
    const row = el('div', 'device-row');
    row.setAttribute('role', 'row');
    row.cells = {
      name: el('span', 'c-name'),
      state: el('span', 'c-state'),
      seen: el('span', 'c-seen'),
      speed: el('span', 'c-speed'),
      zones: el('span', 'c-zones'),
    };
    for (const cell of Object.values(row.cells)) row.appendChild(cell);
    this.viewport.appendChild(row);
    return row;
  }

  fill(row, { d, state }, index) {
    row.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
    row.dataset.device = d.id;
    row.dataset.state = state;
    row.classList.toggle('selected', d.id === this.selected);
    setText(row.cells.name, d.id);
    setText(row.cells.state, STATE_WORDS[state]);
    setText(row.cells.seen, d.fix ? ago(this.now - d.t) : '–');
    setText(row.cells.speed, state === 'offline' ? '–' : kmh(d.speed));
    const zones = [];
    for (const [id, z] of d.zones) zones.push(this.fleet.fenceName(id, z.name));
    setText(row.cells.zones, zones.join(', '));
  }

  select(id) {
    this.selected = id;
    this.paint();
  }
}

/** The words of one log entry. */
export function describe(entry, fleet) {
  const fence = entry.fence ? fleet.fenceName(entry.fence) : '';
  switch (entry.kind) {
    case 'enter':
      return `entered ${fence}`;
    case 'exit':
      return `left ${fence}`;
    case 'dwell':
      return Number.isFinite(entry.since)
        ? `in ${fence} for ${duration(entry.t - entry.since)}`
        : `dwelling in ${fence}`;
    case 'speeding':
      return `${kmh(entry.speed)} in ${fence}${Number.isFinite(entry.limit) ? ` (limit ${kmh(entry.limit)})` : ''}`;
    case 'online':
      return 'came online';
    case 'offline':
      return 'went offline';
    default:
      return entry.kind;
  }
}

export class EventLog {
  /**
   * @param {HTMLElement} list  the <ol> of entries
   * @param {import('./fleet.js').Fleet} fleet
   * @param {number} max  entries shown at most
   */
  constructor(list, fleet, { max = 200, onSelect = () => {} } = {}) {
    this.list = list;
    this.fleet = fleet;
    this.max = max;
    this.queue = [];
    this.shown = 0;
    this.total = 0;
    fleet.logListeners.push((entry) => {
      this.queue.push(entry);
      // Only the newest `max` can be shown: drop the rest before they cost DOM work.
      if (this.queue.length > this.max) this.queue.splice(0, this.queue.length - this.max);
    });
    list.addEventListener('click', (e) => {
      const item = e.target.closest('li');
      if (item && item.dataset.device) onSelect(item.dataset.device);
    });
  }

  /** Adds the queued entries, newest first, and trims the oldest. */
  flush() {
    if (this.queue.length === 0) return;
    const fragment = document.createDocumentFragment();
    for (let i = this.queue.length - 1; i >= 0; i -= 1) {
      const entry = this.queue[i];
      const item = el('li', `log-${entry.kind}`);
      item.dataset.kind = entry.kind;
      item.dataset.device = entry.device;
      if (entry.fence) item.dataset.fence = entry.fence;
      item.append(
        el('time', 'log-time', Number.isFinite(entry.t) ? clock(entry.t) : ''),
        el('span', 'log-kind', entry.kind),
        el('span', 'log-device', entry.device),
        el('span', 'log-text', describe(entry, this.fleet) + (entry.historic ? ' (late)' : '')),
      );
      fragment.appendChild(item);
    }
    this.total += this.queue.length;
    this.queue = [];
    this.list.prepend(fragment);
    while (this.list.childElementCount > this.max) this.list.lastElementChild.remove();
    this.shown = this.list.childElementCount;
  }
}

/** Counts of devices by state. */
export function summary(fleet) {
  const now = fleet.now();
  const counts = { moving: 0, stopped: 0, stale: 0, offline: 0, nofix: 0 };
  for (const d of fleet.devices.values()) counts[fleet.state(d, now)] += 1;
  return counts;
}
