// A bridge from the Rust tests to Debian's Chromium: reads one JSON command
// per line on stdin, answers one JSON line on stdout. playwright-core drives
// /usr/bin/chromium (or $FIXGATE_CHROMIUM); nothing is downloaded.
//
// Commands ({"cmd": ...}):
//   open {url, width?, height?}     launch (fresh profile) and load the page
//   eval {expr}                      the value of a JS expression in the page
//   wait {expr, timeout}             until the expression is truthy; {elapsed_ms}
//   reload {url?}                    load the page again (same profile and cache)
//   network                          every request the browser made: {url, type, status, encoded, from_cache}
//   metrics                          CDP Performance.getMetrics and performance.memory
//   gc                               a full garbage collection (before reading memory)
//   console                          console errors and page errors so far
//   click {selector}, fill {selector, value}   as a user would
//   offline {on}                     the browser's network off (loopback too) or on
//   screenshot {path}                a PNG of the viewport
//   proxy {target}                   an HTTP proxy to 127.0.0.1:target here; {port}
//   proxy_freeze                     the proxy stops passing on the /events streams
//                                    open now (their sockets stay open: a stall)
//   proxy_refuse {path, n}           the proxy answers the next n requests for paths
//                                    starting with `path` (default /events) 503
//   proxy_stats                      what the proxy did
//   close                            end the browser
//
// Every answer is {"ok": true, "result": ...} or {"ok": false, "error": "..."}.

import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const executablePath = process.env.FIXGATE_CHROMIUM || '/usr/bin/chromium';
// What this machine's checks found Chromium needs headless as root, with no
// network but loopback (background services would try to reach Google).
const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-default-apps', '--disable-extensions', '--mute-audio',
];

let context = null;
let page = null;
let cdp = null;
let profile = null;
const requests = new Map(); // CDP requestId -> record
const consoleErrors = [];

async function open({ url, width = 1280, height = 800 }) {
  if (context) await close();
  requests.clear();
  consoleErrors.length = 0;
  profile = mkdtempSync(join(tmpdir(), 'fixgate-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    args,
    headless: true,
    viewport: { width, height },
    deviceScaleFactor: 1,
  });
  page = context.pages()[0] || (await context.newPage());
  page.on('console', (msg) => {
    if (msg.type() === 'error') consoleErrors.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));
  cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Performance.enable');
  // The browser's own record of every request, whoever made it.
  cdp.on('Network.requestWillBeSent', (e) => {
    requests.set(e.requestId, {
      url: e.request.url, type: e.type || '', status: 0, encoded: 0, from_cache: false, finished: false,
    });
  });
  cdp.on('Network.responseReceived', (e) => {
    const r = requests.get(e.requestId);
    if (r) {
      r.status = e.response.status;
      r.from_cache = r.from_cache || Boolean(e.response.fromDiskCache || e.response.fromMemoryCache);
      r.encoding = e.response.headers['content-encoding'] || e.response.headers['Content-Encoding'] || '';
    }
  });
  cdp.on('Network.requestServedFromCache', (e) => {
    const r = requests.get(e.requestId);
    if (r) r.from_cache = true;
  });
  cdp.on('Network.loadingFinished', (e) => {
    const r = requests.get(e.requestId);
    if (r) {
      r.encoded = e.encodedDataLength;
      r.finished = true;
    }
  });
  cdp.on('Network.loadingFailed', (e) => {
    const r = requests.get(e.requestId);
    if (r) r.failed = e.errorText;
  });
  const started = Date.now();
  await page.goto(url, { waitUntil: 'load' });
  return { load_ms: Date.now() - started };
}

function closeProxy() {
  if (proxy) {
    proxy.closeAllConnections();
    proxy.close();
    proxy = null;
  }
}

async function close() {
  if (context) await context.close().catch(() => {});
  context = null;
  page = null;
  if (profile) rmSync(profile, { recursive: true, force: true });
  profile = null;
}

async function metrics() {
  const { metrics: list } = await cdp.send('Performance.getMetrics');
  const cdpMetrics = Object.fromEntries(list.map((m) => [m.name, m.value]));
  const memory = await page.evaluate(() => (performance.memory
    ? {
      usedJSHeapSize: performance.memory.usedJSHeapSize,
      totalJSHeapSize: performance.memory.totalJSHeapSize,
    }
    : null));
  return { cdp: cdpMetrics, memory, dom_nodes: await page.evaluate(() => document.getElementsByTagName('*').length) };
}

// The proxy: the page's origin in the tests of stalls and refusals, which a
// healthy daemon does not produce on demand.
let proxy = null;
const proxyState = { streams: [], refuse: new Map(), events_requests: 0, refused: 0, frozen: 0 };

function startProxy(target) {
  return new Promise((resolve) => {
    proxy = http.createServer((req, res) => {
      const isEvents = req.url.startsWith('/events');
      if (isEvents) proxyState.events_requests += 1;
      for (const [prefix, left] of proxyState.refuse) {
        if (left > 0 && req.url.startsWith(prefix)) {
          proxyState.refuse.set(prefix, left - 1);
          proxyState.refused += 1;
          res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1' });
          res.end('busy\n');
          return;
        }
      }
      const upstream = http.request({
        host: '127.0.0.1', port: target, path: req.url, method: req.method, headers: req.headers,
      }, (ures) => {
        res.writeHead(ures.statusCode, ures.headers);
        if (!isEvents) {
          ures.pipe(res);
          return;
        }
        const stream = { frozen: false };
        proxyState.streams.push(stream);
        ures.on('data', (chunk) => {
          if (!stream.frozen) res.write(chunk);
        });
        ures.on('end', () => res.end());
        res.on('close', () => ures.destroy());
      });
      upstream.on('error', () => {
        res.writeHead(502);
        res.end();
      });
      req.pipe(upstream);
    });
    proxy.listen(0, '127.0.0.1', () => resolve({ port: proxy.address().port }));
  });
}

async function run(command) {
  switch (command.cmd) {
    case 'open':
      return open(command);
    case 'eval':
      return page.evaluate(command.expr);
    case 'wait': {
      // Polled with page.evaluate (the DevTools protocol's evaluation, which
      // the page's CSP does not govern): waitForFunction would eval() the
      // expression inside the page, which its CSP rightly forbids.
      const started = Date.now();
      const timeout = command.timeout ?? 10000;
      for (;;) {
        if (await page.evaluate(command.expr)) return { elapsed_ms: Date.now() - started };
        if (Date.now() - started > timeout) throw new Error(`timed out after ${timeout} ms`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
    case 'reload': {
      const started = Date.now();
      if (command.url) await page.goto(command.url, { waitUntil: 'load' });
      else await page.reload({ waitUntil: 'load' });
      return { load_ms: Date.now() - started };
    }
    case 'network':
      return [...requests.values()];
    case 'clear_network':
      requests.clear();
      return null;
    case 'metrics':
      return metrics();
    case 'gc':
      await cdp.send('HeapProfiler.collectGarbage');
      return null;
    case 'console':
      return consoleErrors;
    case 'click':
      await page.click(command.selector);
      return null;
    case 'fill':
      await page.fill(command.selector, command.value);
      return null;
    case 'offline':
      await context.setOffline(Boolean(command.on));
      return null;
    case 'proxy':
      return startProxy(command.target);
    case 'proxy_freeze':
      for (const stream of proxyState.streams) {
        if (!stream.frozen) {
          stream.frozen = true;
          proxyState.frozen += 1;
        }
      }
      return null;
    case 'proxy_refuse':
      proxyState.refuse.set(command.path || '/events', command.n);
      return null;
    case 'proxy_stats':
      return { events_requests: proxyState.events_requests, refused: proxyState.refused, frozen: proxyState.frozen };
    case 'screenshot':
      await page.screenshot({ path: command.path });
      return { path: command.path };
    case 'close':
      await close();
      closeProxy();
      return null;
    default:
      throw new Error(`unknown command ${command.cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer;
  try {
    const result = await run(JSON.parse(line));
    answer = { ok: true, result: result === undefined ? null : result };
  } catch (err) {
    answer = { ok: false, error: String(err && err.stack ? err.stack : err) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
await close();
closeProxy();
