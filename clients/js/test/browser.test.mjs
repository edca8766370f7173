// The demo page in a real browser against the real stack: headless Chromium (Debian's,
// driven by playwright-core, which never downloads a browser) opens the page served by the
// page server of `cargo xtask demo --page`.
//
// - The push console: it logs a device in over WebSocket, echoes through the gateway's
//   nodes, receives and acknowledges a push sent through the push API, then the gateway the
//   page is on is drained (SIGTERM) and the page must resume the same session on the other
//   gateway and still receive pushes.
// - The room: two pages (two devices, each its own browser context) join the demo's room;
//   each says a line (a request, which the echo nodes publish to the room) and each sees both,
//   in the order of their sequence numbers; then one goes offline, the other says two more
//   lines, and the first comes back (resuming its session, joining again after the last
//   sequence number it saw) and gets the two lines it missed as a replay.
//
// It needs the stack running: `cargo xtask test --only-js` starts it on free ports and names
// a JSON description of it in TETHER_PAGE_DEMO (see xtask/src/js.rs). Without it the test is
// skipped, saying so. Every wait is bounded. The pages as they were at the end, passed or
// not, are left beside the description as page.png (the push console), room-a.png and
// room-b.png.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const described = process.env.TETHER_PAGE_DEMO;
/** Longest wait for any one thing the page should show. */
const WAIT_MS = 20_000;
/** The device the page logs in as (unique per run, so a journal left behind cannot matter). */
const DEVICE = `browser-test-${process.pid}`;

const LAUNCH_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
];

/** Polls `check` (async, truthy = done) every 100 ms for at most `ms`. */
async function until(what, check, ms = WAIT_MS) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('the push console logs in, echoes, takes pushes and resumes on another gateway', {
  skip: described ? false : 'needs the page demo: run it through `cargo xtask test --only-js`',
  timeout: 120_000,
}, async (t) => {
  const demo = JSON.parse(readFileSync(described, 'utf8'));
  const pushToken = readFileSync(demo.push_token_file, 'utf8').trim();
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: demo.chromium, args: LAUNCH_ARGS, timeout: 30_000 });
  /** @type {import('playwright-core').Page | undefined} */
  let shown;
  t.after(async () => {
    await shown?.screenshot({ path: join(dirname(described), 'page.png'), fullPage: true }).catch(() => {});
    await browser.close();
  });
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  shown = page;
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.setDefaultTimeout(WAIT_MS);

  const text = (id) => page.locator(`#${id}`).innerText();
  /** The session as the state daemon's push API shows it. */
  const session = async () => {
    const r = await fetch(`${demo.push_api}/v1/sessions/${encodeURIComponent(DEVICE)}`, {
      headers: { authorization: `Bearer ${pushToken}` },
    });
    assert.equal(r.status, 200, `GET /v1/sessions: ${r.status}`);
    return r.json();
  };
  /** Pushes `line` to the device through the page's own Push button (→ /demo/push). */
  const push = async (line) => {
    await page.fill('#push-to', DEVICE);
    await page.fill('#push-text', line);
    await page.click('#push');
    const status = await until('the push API to answer', async () => {
      const s = await text('push-status');
      return s.length > 0 && s;
    });
    assert.match(status, /^200 /, `the push API answered ${status}`);
    await until(`"${line}" on the page`, async () => (await text('pushes')).includes(line));
    // Acknowledged: the daemon holds nothing pending for the device.
    await until('the push acknowledged', async () => (await session()).pending === 0);
    await page.evaluate(() => {
      document.getElementById('push-status').textContent = '';
    });
  };

  // Log in.
  await page.goto(demo.page, { waitUntil: 'load' });
  assert.equal(new URL(page.url()).pathname, '/demo/', '/ redirects to the page');
  await page.fill('#device', DEVICE);
  await page.click('#connect');
  await until('online', async () => (await text('state')) === 'online');
  const sessionId = await text('session');
  assert.match(sessionId, /^\S+$/, 'a session id');
  assert.notEqual(sessionId, '–');
  const firstGateway = await text('gateway');
  const first = demo.gateways.find((g) => g.ws === firstGateway);
  assert.ok(first, `the page is on one of the gateways: ${firstGateway}`);
  const other = demo.gateways.find((g) => g !== first);
  const view = await session();
  assert.equal(view.session, sessionId);
  assert.equal(view.state, 'online');
  assert.ok(view.gateway.startsWith(`${first.id}/`), `the daemon has it on ${first.id}: ${view.gateway}`);

  // Echo through the gateway's nodes.
  await page.fill('#echo-text', 'hello from chromium');
  await page.click('#echo');
  await until('the echo reply', async () => (await text('echo-reply')) === 'reply: hello from chromium');

  // A push, received once and acknowledged.
  await push('first push');

  // Drain the gateway the page is on: GOAWAY, and the page resumes on the other.
  process.kill(first.pid, 'SIGTERM');
  await until('resumed on the other gateway', async () =>
    (await text('resumed')) === '1' && (await text('state')) === 'online');
  assert.equal(await text('gateway'), other.ws);
  assert.equal(await text('session'), sessionId, 'the same session');
  assert.equal(await text('connections'), '2');
  const moved = await session();
  assert.equal(moved.session, sessionId);
  assert.ok(moved.gateway.startsWith(`${other.id}/`), `the daemon has it on ${other.id}: ${moved.gateway}`);

  // Pushes still arrive, through the other gateway.
  await push('second push');
  const received = await page.locator('#pushes li').allInnerTexts();
  assert.equal(received.length, 2, `each push shown once: ${received}`);
  assert.match(received[0], /^#\d+ first push$/);
  assert.match(received[1], /^#\d+ second push$/);
  assert.deepEqual(problems, [], 'no script error on the page');
});

test('two pages in one room see each other\'s lines in order, and one that was offline gets what it missed as a replay', {
  skip: described ? false : 'needs the page demo: run it through `cargo xtask test --only-js`',
  timeout: 120_000,
}, async (t) => {
  const demo = JSON.parse(readFileSync(described, 'utf8'));
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: demo.chromium, args: LAUNCH_ARGS, timeout: 30_000 });
  /** @type {[string, import('playwright-core').Page][]} */
  const shown = [];
  t.after(async () => {
    for (const [name, page] of shown) {
      await page.screenshot({ path: join(dirname(described), `${name}.png`), fullPage: true }).catch(() => {});
    }
    await browser.close();
  });
  const problems = [];

  /** A page of its own (a device: its own browser context), logged in, in the room. */
  const device = async (name) => {
    const context = await browser.newContext({ viewport: { width: 1000, height: 1100 } });
    const page = await context.newPage();
    shown.push([name, page]);
    page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`${name}: console: ${m.text()}`);
    });
    page.setDefaultTimeout(WAIT_MS);
    await page.goto(demo.page, { waitUntil: 'load' });
    await page.fill('#device', `${DEVICE}-${name}`);
    await page.click('#connect');
    await until(`${name} online`, async () => (await page.locator('#state').innerText()) === 'online');
    const status = await until(`${name} in the room`, async () => {
      const s = await page.locator('#room-status').innerText();
      if (s.startsWith('error')) throw new Error(s);
      return /^member of /.test(s) && s;
    });
    assert.match(status, new RegExp(`^member of ${demo.room} \\(latest #\\d+\\)$`));
    return page;
  };
  /** The room's messages a page shows, in its order, that this test said. */
  const lines = (page) =>
    page.$$eval('#room-messages li', (items, prefix) =>
      items
        .map((li) => ({ seq: BigInt(li.dataset.seq).toString(), text: li.dataset.text, replay: li.dataset.replay === '1' }))
        .filter((m) => m.text.startsWith(prefix)), DEVICE);
  /** Waits until `page` shows exactly `want` (texts) of this test's lines, and returns them. */
  const shows = async (page, name, want) =>
    until(`${name} to show ${JSON.stringify(want)}`, async () => {
      const got = await lines(page);
      return JSON.stringify(got.map((m) => m.text)) === JSON.stringify(want) && got;
    });
  /** `page` says `line` and its echo node publishes it. */
  const say = async (page, name, line) => {
    await page.evaluate(() => {
      document.getElementById('say-status').textContent = '';
    });
    await page.fill('#say-text', line);
    await page.click('#say');
    const status = await until(`${name}'s line answered`, async () => {
      const s = await page.locator('#say-status').innerText();
      return s.length > 0 && s;
    });
    assert.equal(status, 'sent');
    return `${DEVICE}-${name}: ${line}`;
  };
  const ascending = (messages) => messages.every((m, i) => i === 0 || BigInt(m.seq) > BigInt(messages[i - 1].seq));

  const a = await device('room-a');
  const b = await device('room-b');

  // Each says a line; each page shows both, in the order of their sequence numbers.
  const first = await say(a, 'room-a', 'first line');
  await shows(a, 'a', [first]);
  const second = await say(b, 'room-b', 'second line');
  const onA = await shows(a, 'a', [first, second]);
  const onB = await shows(b, 'b', [first, second]);
  for (const got of [onA, onB]) {
    assert.ok(ascending(got), `in seq order: ${JSON.stringify(got)}`);
    assert.ok(got.every((m) => !m.replay), 'live, not replayed');
  }
  assert.deepEqual(onA.map((m) => m.seq), onB.map((m) => m.seq), 'the same seqs on both pages');

  // b goes offline; a says two lines meanwhile.
  await b.click('#offline');
  await until('b offline', async () => (await b.locator('#state').innerText()) === 'idle');
  const third = await say(a, 'room-a', 'third line');
  const fourth = await say(a, 'room-a', 'fourth line');
  const all = await shows(a, 'a', [first, second, third, fourth]);
  assert.ok(ascending(all), `in seq order: ${JSON.stringify(all)}`);
  assert.equal((await lines(b)).length, 2, 'nothing reached b while offline');

  // b comes back: the same session, the room joined again after the last seq it saw, and
  // the two lines it missed replayed.
  const session = await b.locator('#session').innerText();
  await b.click('#online');
  await until('b online again, resumed', async () =>
    (await b.locator('#state').innerText()) === 'online' && (await b.locator('#resumed').innerText()) === '1');
  assert.equal(await b.locator('#session').innerText(), session, 'the same session');
  const caughtUp = await shows(b, 'b', [first, second, third, fourth]);
  assert.deepEqual(caughtUp.map((m) => m.seq), all.map((m) => m.seq), 'the same seqs as a saw');
  assert.deepEqual(caughtUp.map((m) => m.replay), [false, false, true, true], 'what it missed came as a replay');

  // And live again: a line said now reaches both, live.
  const fifth = await say(b, 'room-b', 'fifth line');
  const end = await shows(a, 'a', [first, second, third, fourth, fifth]);
  const endB = await shows(b, 'b', [first, second, third, fourth, fifth]);
  assert.equal(endB.at(-1).replay, false);
  assert.deepEqual(end.map((m) => m.seq), endB.map((m) => m.seq));
  assert.deepEqual(problems, [], 'no script error on the pages');
});
