// @ts-check
// The push console: the demo page's script. It asks the page's own server for its settings
// (`/demo/config`: where ipconfig is) and for a login token (`/demo/token?device=…`), as a
// real app would ask its account service, and pushes through `/demo/push`, which forwards to
// the state daemon's push API with the server's API token.

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

async function connect() {
  const device = input('device').value.trim();
  if (!device) return;
  const config = await (await fetch('/demo/config')).json();
  client = new TetherClient({
    ipconfig: config.ipconfig,
    token: async () => {
      const r = await fetch(`/demo/token?device=${encodeURIComponent(device)}`);
      if (!r.ok) throw new Error(`token: ${r.status}`);
      return r.text();
    },
  });
  client.addEventListener('state', (event) => {
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
    button('echo').disabled = d.state !== 'online';
    log(`${d.state}${d.reason ? ` (${d.reason})` : ''}${d.state === 'online' ? ` on ${d.gateway}${d.resumed ? ', resumed' : ''}` : ''}`);
  });
  client.addEventListener('push', (event) => {
    const d = /** @type {CustomEvent} */ (event).detail;
    append('pushes', `#${d.id} ${new TextDecoder().decode(d.payload)}`);
  });
  client.start();
  button('connect').disabled = true;
  button('disconnect').disabled = false;
}

button('connect').addEventListener('click', () => {
  connect().catch((e) => log(`connect failed: ${e}`));
});

button('disconnect').addEventListener('click', () => {
  client?.stop();
  client = null;
  button('connect').disabled = false;
  button('disconnect').disabled = true;
});

button('echo').addEventListener('click', async () => {
  if (!client) return;
  const sent = input('echo-text').value;
  try {
    const reply = await client.request(sent, { resendSafe: true });
    $('echo-reply').textContent = `reply: ${new TextDecoder().decode(reply)}`;
  } catch (e) {
    $('echo-reply').textContent = `error: ${e instanceof Error ? e.message : e}`;
  }
});

button('push').addEventListener('click', async () => {
  const body = JSON.stringify({ device_id: input('push-to').value.trim(), text: input('push-text').value });
  const r = await fetch('/demo/push', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  $('push-status').textContent = `${r.status} ${await r.text()}`;
});
