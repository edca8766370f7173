// @ts-check
// The demo page's script: a push console and a live room. It asks the page's own server for
// its settings (`/demo/config`: where ipconfig is, which room the echo nodes publish to) and
// for a login token (`/demo/token?device=…`, allowing the rooms the page may join), as a real
// app would ask its account service, and pushes through `/demo/push`, which forwards to the
// state daemon's push API with the server's API token. Once online it joins the room named
// in its input; Say sends a line as a request, which the demo's echo nodes publish to their
// room, so every page in it shows the line, in the order of the room's sequence numbers.

import { TetherClient } from '../tether.js';

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @param {string} id */
const input = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));
/** @param {string} id */
const button = (id) => /** @type {HTMLButtonElement} */ (document.getElementById(id));

/** @type {TetherClient | null} */
let client = null;
let connections = 0;
let resumed = 0;
/** The device logged in. */
let device = '';
/** @type {string | null} the room whose messages are shown */
let room = null;

/**
 * @param {string} list  element id
 * @param {string} line
 */
function append(list, line) {
  const item = document.createElement('li');
  item.textContent = line;
  $(list).append(item);
  item.scrollIntoView({ block: 'nearest' });
}

/** @param {string} line */
function log(line) {
  append('log', `${new Date().toISOString().slice(11, 23)} ${line}`);
}

/** @param {unknown} e */
const errorText = (e) => (e instanceof Error ? e.message : String(e));

/** @param {string} state */
function enable(state) {
  const online = state === 'online';
  button('echo').disabled = !online;
  button('join').disabled = !online;
  button('say').disabled = !online;
  button('offline').disabled = !online;
  button('online').disabled = !(client && state === 'idle');
}

async function connect() {
  device = input('device').value.trim();
  if (!device) return;
  const config = await (await fetch('/demo/config')).json();
  if (typeof config.room === 'string') $('publish-room').textContent = config.room;
  const c = new TetherClient({
    ipconfig: config.ipconfig,
    token: async () => {
      const r = await fetch(`/demo/token?device=${encodeURIComponent(device)}`);
      if (!r.ok) throw new Error(`token: ${r.status}`);
      return r.text();
    },
  });
  client = c;
  let first = true;
  c.addEventListener('state', (event) => {
    const d = /** @type {CustomEvent} */ (event).detail;
    $('state').textContent = d.state;
    $('state').dataset.state = d.state;
    $('gateway').textContent = d.gateway ?? '–';
    $('session').textContent = d.session ?? '–';
    if (d.state === 'online') {
      connections++;
      if (d.resumed) resumed++;
      $('connections').textContent = String(connections);
      $('resumed').textContent = String(resumed);
    }
    enable(d.state);
    log(`${d.state}${d.reason ? ` (${d.reason})` : ''}${d.state === 'online' ? ` on ${d.gateway}${d.resumed ? ', resumed' : ''}` : ''}`);
    // The first time online, join the room; after that the client joins it again itself.
    if (d.state === 'online' && first) {
      first = false;
      joinRoom(input('room').value.trim());
    }
  });
  c.addEventListener('push', (event) => {
    const d = /** @type {CustomEvent} */ (event).detail;
    append('pushes', `#${d.id} ${new TextDecoder().decode(d.payload)}`);
  });
  c.addEventListener('room', (event) => {
    const d = /** @type {CustomEvent<import('../tether.js').RoomDetail>} */ (event).detail;
    if (d.room === room || d.room === '') showMessage(d);
  });
  c.addEventListener('rejoin', (event) => {
    const d = /** @type {CustomEvent} */ (event).detail;
    if (d.ok) {
      log(`joined ${d.room} again (latest #${d.ok.seq}): what was missed comes as a replay`);
    } else {
      log(`could not join ${d.room} again: ${errorText(d.error)}`);
      if (d.room === room) $('room-status').textContent = `error: ${errorText(d.error)}`;
    }
  });
  c.start();
  button('connect').disabled = true;
  button('disconnect').disabled = false;
}

/**
 * Leaves the room shown (if another) and joins `name`.
 * @param {string} name
 */
async function joinRoom(name) {
  const c = client;
  if (!c || !name) return;
  const status = $('room-status');
  if (room && room !== name) {
    await c.leave(room).catch((e) => log(`leave ${room}: ${errorText(e)}`));
  }
  if (room !== name) $('room-messages').replaceChildren();
  room = name;
  status.dataset.room = '';
  status.textContent = `joining ${name}…`;
  try {
    const ok = await c.join(name);
    status.dataset.room = name;
    status.textContent = `member of ${name} (latest #${ok.seq})`;
  } catch (e) {
    if (room === name) room = null;
    status.textContent = `error: ${errorText(e)}`;
  }
}

/**
 * One room message, in its place by sequence number.
 * @param {import('../tether.js').RoomDetail} d
 */
function showMessage(d) {
  const item = document.createElement('li');
  item.dataset.seq = String(d.seq);
  item.dataset.replay = d.replay ? '1' : '0';
  item.dataset.text = new TextDecoder().decode(d.payload);
  if (d.replay) item.classList.add('replay');
  if (d.gap > 0) item.classList.add('gap');
  const notes = [d.room === '' ? 'broadcast' : '', d.replay ? 'replay' : '', d.gap > 0 ? `${d.gap} missed before` : '']
    .filter(Boolean)
    .join(', ');
  item.textContent = `#${d.seq} ${item.dataset.text}${notes ? ` (${notes})` : ''}`;
  const list = $('room-messages');
  const after = Array.from(list.children).find((li) => BigInt(/** @type {HTMLElement} */ (li).dataset.seq ?? '0') > d.seq);
  list.insertBefore(item, after ?? null);
  item.scrollIntoView({ block: 'nearest' });
}

button('connect').addEventListener('click', () => {
  connect().catch((e) => log(`connect failed: ${e}`));
});

button('disconnect').addEventListener('click', () => {
  client?.stop();
  client = null;
  room = null;
  $('room-status').textContent = '';
  button('connect').disabled = false;
  button('disconnect').disabled = true;
  enable('idle');
});

button('offline').addEventListener('click', () => client?.stop());
button('online').addEventListener('click', () => client?.start());

button('echo').addEventListener('click', async () => {
  if (!client) return;
  const sent = input('echo-text').value;
  try {
    const reply = await client.request(sent, { resendSafe: true });
    $('echo-reply').textContent = `reply: ${new TextDecoder().decode(reply)}`;
  } catch (e) {
    $('echo-reply').textContent = `error: ${errorText(e)}`;
  }
});

button('join').addEventListener('click', () => joinRoom(input('room').value.trim()));

button('say').addEventListener('click', async () => {
  if (!client) return;
  const line = `${device}: ${input('say-text').value}`;
  try {
    // Not resend-safe: a request sent again would be published twice.
    await client.request(line);
    $('say-status').textContent = 'sent';
  } catch (e) {
    $('say-status').textContent = `error: ${errorText(e)}`;
  }
});

button('push').addEventListener('click', async () => {
  const body = JSON.stringify({ device_id: input('push-to').value.trim(), text: input('push-text').value });
  const r = await fetch('/demo/push', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  $('push-status').textContent = `${r.status} ${await r.text()}`;
});
