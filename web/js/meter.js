// Frame timing measured in the page itself: a requestAnimationFrame loop
// records the time between frames. Off unless asked for (`?stats` or the
// test hook), since a loop that runs every frame keeps a Pi awake.

export class FrameMeter {
  constructor() {
    this.running = false;
    this.intervals = [];
    this.last = 0;
    this.started = 0;
    this.longTasks = 0;
    this.longTaskMs = 0;
    this.observer = null;
  }

  /** Starts (or restarts) a measurement. */
  start() {
    this.intervals = [];
    this.last = 0;
    this.started = performance.now();
    this.longTasks = 0;
    this.longTaskMs = 0;
    if (!this.observer && typeof PerformanceObserver === 'function') {
      try {
        this.observer = new PerformanceObserver((list) => {
          for (const entry of list.getEntries()) {
            this.longTasks += 1;
            this.longTaskMs += entry.duration;
          }
        });
        this.observer.observe({ type: 'longtask', buffered: false });
      } catch {
        this.observer = null; // no long-task timing here: frame times still work
      }
    }
    if (this.running) return;
    this.running = true;
    const tick = (t) => {
      if (!this.running) return;
      if (this.last) {
        // Bounded: a day at 60 fps would be 5 million entries; past the
        // bound the oldest half goes.
        if (this.intervals.length >= 100000) this.intervals.splice(0, 50000);
        this.intervals.push(t - this.last);
      }
      this.last = t;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  stop() {
    this.running = false;
  }

  /**
   * Frames, median and 95th-percentile frame time (ms), frames per second
   * (from the median, and overall), and frames dropped: each interval counts
   * as round(interval / refresh) frames, all but one of them dropped, where
   * the refresh interval is the shortest 5th percentile seen.
   */
  result(last = 0) {
    // `last`: only the newest intervals (the on-screen figures, read twice a
    // second, must not sort a long run's every frame each time).
    const intervals = last > 0 ? this.intervals.slice(-last) : this.intervals;
    const n = intervals.length;
    const elapsed = last > 0 ? intervals.reduce((a, b) => a + b, 0) : performance.now() - this.started;
    if (n === 0) return { frames: 0, elapsed_ms: elapsed };
    const sorted = [...intervals].sort((a, b) => a - b);
    const median = sorted[Math.floor(n / 2)];
    const p95 = sorted[Math.min(n - 1, Math.floor(n * 0.95))];
    const refresh = Math.max(1, sorted[Math.floor(n * 0.05)]);
    let dropped = 0;
    for (const dt of intervals) dropped += Math.max(0, Math.round(dt / refresh) - 1);
    return {
      frames: n,
      elapsed_ms: elapsed,
      median_ms: median,
      p95_ms: p95,
      max_ms: sorted[n - 1],
      refresh_ms: refresh,
      fps_median: 1000 / median,
      fps_mean: (n * 1000) / elapsed,
      dropped,
      long_tasks: this.longTasks,
      long_task_ms: this.longTaskMs,
    };
  }
}
