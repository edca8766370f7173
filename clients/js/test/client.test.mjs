// Unit tests of the browser client without a browser or a gateway: the codec against
// doc/protocol.md's examples, and the client's state machine over a scripted WebSocket.
// Run: node --test clients/js/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  Kind,
  ErrorCode,
  FLAG_RESEND_SAFE,
  TetherClient,
  TetherError,
  RoomFlag,
  backoffMs,
  decodeError,
  decodeFrames,
  decodeRoom,
  encodeFrame,
  encodeJoin,
  validRoomName,
  gatewaysOf,
  ipListUrl,
  retryAfterMs,
} from '../tether.js';

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const text = (s) => new TextEncoder().encode(s);
const buffer = (bytes) => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);

test('frames encode as doc/protocol.md shows', () => {
  assert.equal(hex(encodeFrame(Kind.DATA, 7n, text('hi'))), '0000000c05000000000000000007' + '6869');
  assert.equal(hex(encodeFrame(Kind.PING, 42n, new Uint8Array(0))), '0000000a0300000000000000002a');
  assert.equal(hex(encodeFrame(Kind.DATA, 1n, text('x'), FLAG_RESEND_SAFE)).slice(8, 12), '0501');
});

test('a message of several frames decodes to each, and a cut one is refused', () => {
  const a = encodeFrame(Kind.PONG, 42n, new Uint8Array(0));
  const b = encodeFrame(Kind.PUSH, 2n ** 60n, text('payload'));
  const both = new Uint8Array([...a, ...b]);
  const frames = decodeFrames(buffer(both));
  assert.equal(frames.length, 2);
  assert.deepEqual([frames[0].kind, frames[0].id], [Kind.PONG, 42n]);
  assert.deepEqual([frames[1].kind, frames[1].id], [Kind.PUSH, 2n ** 60n]);
  assert.equal(new TextDecoder().decode(frames[1].body), 'payload');
  assert.throws(() => decodeFrames(buffer(both.subarray(0, both.length - 1))), /inside a frame/);
  assert.throws(() => decodeFrames(buffer(both.subarray(0, 5))), /inside a frame header/);
  const short = encodeFrame(Kind.PING, 1n, new Uint8Array(0));
  new DataView(short.buffer).setUint32(0, 9);
  assert.throws(() => decodeFrames(buffer(short)), /bad frame length 9/);
});

test('an ERROR body is a code and a reason', () => {
  assert.deepEqual(decodeError(new Uint8Array([0, 2, ...text('frame too large')])), {
    code: ErrorCode.FRAME_TOO_LARGE,
    reason: 'frame too large',
  });
  assert.equal(decodeError(new Uint8Array([1])).code, 0);
  assert.match(new TetherError(12, 'other login').message, /^KICKED: other login$/);
});

test('BUSY hints and backoff stay in their bounds', () => {
  assert.equal(retryAfterMs('retry_after_ms=250; too many logins in flight'), 250);
  assert.equal(retryAfterMs('busy'), null);
  for (let attempt = 0; attempt < 40; attempt++) {
    for (const r of [0, 0.5, 0.999]) {
      const ms = backoffMs(attempt, 250, 10_000, () => r);
      assert.ok(ms >= 125 && ms <= 10_000, `${attempt} ${r} ${ms}`);
    }
  }
  assert.equal(backoffMs(3, 250, 10_000, () => 0.999), 2000 * 0.999);
});

test('gateways come from /ip_list by transport, best first', () => {
  const list = {
    gateways: [
      { id: 'a', addr: '10.0.0.1:8900', transports: { tcp: '10.0.0.1:8900', ws: '10.0.0.1:8920' } },
      { id: 'b', addr: '10.0.0.2:8900', transports: { ws: 'h:1', wss: 'gw.example:443' } },
      { id: 'c', addr: '10.0.0.3:8900' },
    ],
  };
  assert.deepEqual(gatewaysOf(list, false), [
    { id: 'a', url: 'ws://10.0.0.1:8920/ws' },
    { id: 'b', url: 'ws://h:1/ws' },
  ]);
  assert.deepEqual(gatewaysOf(list, true), [{ id: 'b', url: 'wss://gw.example:443/ws' }]);
  assert.deepEqual(gatewaysOf({ nonsense: 1 }, false), []);
});

test('/ip_list is fetched below the ipconfig URL, path prefix kept', () => {
  assert.equal(ipListUrl('http://127.0.0.1:6789').href, 'http://127.0.0.1:6789/ip_list');
  assert.equal(ipListUrl('http://127.0.0.1:6789/').href, 'http://127.0.0.1:6789/ip_list');
  assert.equal(ipListUrl('https://api.example/tether').href, 'https://api.example/tether/ip_list');
  assert.equal(ipListUrl('https://api.example/tether/').href, 'https://api.example/tether/ip_list');
  assert.throws(() => ipListUrl('not a url'));
});

/**
 * A ROOM body as the state daemon builds one (proto/src/room.rs, BatchWriter).
 * @param {number} flags
 * @param {string} room
 * @param {[bigint, string][]} messages  (seq, payload)
 */
function roomBody(flags, room, messages) {
  const name = text(room);
  const parts = [new Uint8Array([flags, name.length]), name];
  for (const [seq, payload] of messages) {
    const head = new Uint8Array(12);
    const bytes = text(payload);
    new DataView(head.buffer).setBigUint64(0, seq);
    new DataView(head.buffer).setUint32(8, bytes.length);
    parts.push(head, bytes);
  }
  return new Uint8Array(parts.flatMap((p) => [...p]));
}

test('ROOM bodies decode to their messages; cut ones are refused', () => {
  const body = roomBody(RoomFlag.REPLAY, 'lobby', [[7n, 'hello'], [8n, '']]);
  assert.equal(hex(body.subarray(0, 7)), '02056c6f626279');
  const batch = decodeRoom(body);
  assert.deepEqual([batch.flags, batch.room], [RoomFlag.REPLAY, 'lobby']);
  assert.deepEqual(batch.messages.map((m) => [m.seq, new TextDecoder().decode(m.payload)]), [[7n, 'hello'], [8n, '']]);
  // The broadcast has the empty name; a body of no messages is whole.
  assert.equal(decodeRoom(roomBody(0, '', [[1n, 'x']])).room, '');
  assert.deepEqual(decodeRoom(roomBody(0, 'r', [])).messages, []);
  // Every cut is refused, never read past.
  for (let cut = 0; cut < body.length; cut++) {
    if (cut === 7 || cut === 7 + 12 + 5) continue; // ends between messages: whole
    assert.throws(() => decodeRoom(body.subarray(0, cut)), /ends inside/, `cut at ${cut}`);
  }
  assert.throws(() => decodeRoom(new Uint8Array([0, 1, 0xff])), TypeError, 'a name that is not UTF-8');
});

test('JOIN bodies and room names are as doc/protocol.md says', () => {
  assert.equal(hex(encodeJoin('lobby', 258n)), '0000000000000102' + '6c6f626279');
  assert.ok(validRoomName('lobby'));
  assert.ok(validRoomName('demo/é'));
  assert.ok(validRoomName('x'.repeat(128)));
  assert.ok(!validRoomName(''));
  assert.ok(!validRoomName('x'.repeat(127) + 'é'), '129 bytes');
  assert.ok(!validRoomName('line\nbreak'));
});

// -- the client over a scripted WebSocket --------------------------------------------------

/** A WebSocket whose peer is the test: it opens on the next turn, records what is sent. */
class FakeSocket {
  static all = [];
  static refuse = new Set();
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.sent = [];
    this.closed = null;
    FakeSocket.all.push(this);
    setTimeout(() => {
      if (FakeSocket.refuse.has(url)) this.onerror?.({});
      else this.onopen?.({});
    }, 0);
  }
  send(bytes) {
    this.sent.push(...decodeFrames(buffer(bytes)));
  }
  close(code = 1000) {
    if (this.closed) return;
    this.closed = code;
    setTimeout(() => this.onclose?.({ code, reason: '' }), 0);
  }
  /** The gateway sends these frames in one message. */
  deliver(...frames) {
    const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const f of frames) {
      all.set(f, at);
      at += f.length;
    }
    this.onmessage?.({ data: buffer(all) });
  }
  /** The gateway closes. */
  drop(code = 1006) {
    this.closed = code;
    this.onclose?.({ code, reason: '' });
  }
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
async function until(what, check, ms = 2000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick();
  }
}

function client(options = {}) {
  FakeSocket.all = [];
  FakeSocket.refuse = new Set();
  globalThis.WebSocket = FakeSocket;
  const c = new TetherClient({
    gateways: ['ws://gw-a/ws', 'ws://gw-b/ws'],
    token: 'jwt-1',
    backoffMinMs: 10,
    backoffMaxMs: 40,
    ...options,
  });
  c.states = [];
  c.pushes = [];
  c.addEventListener('state', (e) => c.states.push(e.detail.state));
  c.addEventListener('push', (e) => c.pushes.push(e.detail));
  return c;
}

const loginOk = (id, session, resume) =>
  encodeFrame(Kind.LOGIN_OK, id, text(JSON.stringify({ session, resume_token: resume, heartbeat_s: 30 })));
const error = (id, code, reason) => encodeFrame(Kind.ERROR, id, new Uint8Array([code >> 8, code & 255, ...text(reason)]));

async function online(c) {
  c.start();
  await until('LOGIN', () => FakeSocket.all[0]?.sent.length === 1);
  const socket = FakeSocket.all[0];
  const login = socket.sent[0];
  assert.equal(login.kind, Kind.LOGIN);
  assert.equal(new TextDecoder().decode(login.body), 'jwt-1');
  assert.equal(socket.protocol, 'tether.v1');
  socket.deliver(loginOk(login.id, 's-1', 'r-1'));
  await until('online', () => c.state === 'online');
  return socket;
}

test('logs in, answers requests and acknowledges each push once', async () => {
  const c = client();
  const socket = await online(c);
  assert.deepEqual(c.states, ['connecting', 'authenticating', 'online']);

  const reply = c.request('hello', { resendSafe: true });
  const data = socket.sent.at(-1);
  assert.equal(data.kind, Kind.DATA);
  assert.equal(data.flags, FLAG_RESEND_SAFE);
  socket.deliver(encodeFrame(Kind.DATA, data.id, text('hello')));
  assert.equal(new TextDecoder().decode(await reply), 'hello');

  const failing = c.request('x');
  socket.deliver(error(socket.sent.at(-1).id, ErrorCode.NO_BACKEND, 'no node is up'));
  await assert.rejects(failing, (e) => e instanceof TetherError && e.code === ErrorCode.NO_BACKEND);
  assert.equal(c.state, 'online', 'NO_BACKEND answers one request; the connection stays');

  socket.deliver(encodeFrame(Kind.PUSH, 9n, text('p')), encodeFrame(Kind.PUSH, 9n, text('p')));
  const acks = socket.sent.filter((f) => f.kind === Kind.ACK);
  assert.deepEqual(acks.map((f) => f.id), [9n, 9n], 'every copy is acknowledged');
  assert.equal(c.pushes.length, 1, 'the page sees a message id once');
  assert.equal(c.pushes[0].id, 9n);
  c.stop();
});

test('GOAWAY: reconnects at once elsewhere and resumes the session', async () => {
  const c = client();
  const first = await online(c);
  first.deliver(encodeFrame(Kind.GOAWAY, 0n, text('{"reason":"gateway shutting down"}')));
  await until('a second socket', () => FakeSocket.all.length === 2 && FakeSocket.all[1].sent.length === 1);
  const second = FakeSocket.all[1];
  assert.equal(second.url, 'ws://gw-b/ws', 'the draining gateway goes last');
  const resume = second.sent[0];
  assert.equal(resume.kind, Kind.RESUME);
  assert.equal(new TextDecoder().decode(resume.body), 'r-1');
  second.deliver(loginOk(resume.id, 's-1', 'r-2'));
  await until('online again', () => c.state === 'online');
  assert.equal(c.resumed, true);
  assert.equal(c.resumeToken, 'r-2');
  c.stop();
});

test('a refused resume logs in anew; a dropped socket is retried with backoff', async () => {
  const c = client();
  const first = await online(c);
  const pending = c.request('lost');
  first.drop();
  await assert.rejects(pending, (e) => e.code === 0);
  assert.equal(c.state, 'waiting');
  await until('resume sent', () => FakeSocket.all.length === 2 && FakeSocket.all[1].sent.length === 1);
  const second = FakeSocket.all[1];
  second.deliver(error(second.sent[0].id, ErrorCode.AUTH_FAILED, 'unknown or expired resume token'));
  await until('a third socket', () => FakeSocket.all.length === 3 && FakeSocket.all[2].sent.length === 1);
  const third = FakeSocket.all[2];
  assert.equal(third.sent[0].kind, Kind.LOGIN);
  third.deliver(loginOk(third.sent[0].id, 's-2', 'r-3'));
  await until('online', () => c.state === 'online');
  assert.equal(c.resumed, false);
  assert.equal(c.session, 's-2');
  c.stop();
});

test('BUSY is retried on the same socket after the hint; KICKED ends the session', async () => {
  const c = client();
  c.start();
  await until('LOGIN', () => FakeSocket.all[0]?.sent.length === 1);
  const socket = FakeSocket.all[0];
  const started = Date.now();
  socket.deliver(error(socket.sent[0].id, ErrorCode.BUSY, 'retry_after_ms=40; too many logins in flight'));
  await until('LOGIN again', () => socket.sent.length === 2);
  assert.ok(Date.now() - started >= 19, 'waited about the hint (0.5 to 1.5 times)');
  assert.equal(FakeSocket.all.length, 1, 'same socket');
  socket.deliver(loginOk(socket.sent[1].id, 's-1', 'r-1'));
  await until('online', () => c.state === 'online');
  socket.deliver(error(0n, ErrorCode.KICKED, 'logged in elsewhere'));
  assert.equal(c.state, 'ended');
  await tick(60);
  assert.equal(FakeSocket.all.length, 1, 'no reconnect after KICKED');
});

test('an unreachable gateway is skipped for the next one', async () => {
  const c = client();
  FakeSocket.refuse.add('ws://gw-a/ws');
  c.start();
  await until('LOGIN on b', () => FakeSocket.all[1]?.sent.length === 1);
  assert.equal(FakeSocket.all[1].url, 'ws://gw-b/ws');
  c.stop();
});

test('the client finds its gateways through /ip_list and dials their WebSocket', async () => {
  const c = client({ gateways: undefined, ipconfig: 'http://ipconfig.test:6789/base' });
  const asked = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (url) => {
    asked.push(String(url));
    return {
      ok: true,
      status: 200,
      json: async () => ({
        gateways: [
          { id: 'tcp-only', addr: 'h1:8900', transports: { tcp: 'h1:8900' } },
          { id: 'web', addr: 'h2:8900', transports: { tcp: 'h2:8900', ws: 'h2:8920' } },
        ],
      }),
    };
  };
  try {
    c.start();
    await until('a socket', () => FakeSocket.all.length === 1);
    assert.deepEqual(asked, ['http://ipconfig.test:6789/base/ip_list']);
    assert.equal(FakeSocket.all[0].url, 'ws://h2:8920/ws', 'the gateway offering ws, at /ws');
    c.stop();
  } finally {
    globalThis.fetch = realFetch;
  }
});

const roomOk = (id, room, seq, member = true) => encodeFrame(Kind.ROOM_OK, id, text(JSON.stringify({ room, seq, member })));
const room = (flags, name, messages) => encodeFrame(Kind.ROOM, messages.at(-1)?.[0] ?? 0n, roomBody(flags, name, messages));

function rooms(c) {
  const seen = [];
  c.addEventListener('room', (e) => {
    const d = e.detail;
    seen.push(`${d.room} #${d.seq} ${new TextDecoder().decode(d.payload)}${d.replay ? ' replay' : ''}${d.gap ? ` gap ${d.gap}` : ''}`);
  });
  return seen;
}

test('join and leave are answered by ROOM_OK or an ERROR with their id', async () => {
  const c = client();
  const socket = await online(c);
  const seen = rooms(c);

  const joined = c.join('lobby');
  const join = socket.sent.at(-1);
  assert.equal(join.kind, Kind.JOIN);
  assert.equal(hex(join.body), '0000000000000000' + '6c6f626279', 'after 0, then the name');
  socket.deliver(roomOk(join.id, 'lobby', 41));
  assert.deepEqual(await joined, { room: 'lobby', seq: 41n, member: true });

  const refused = c.join('secret');
  socket.deliver(error(socket.sent.at(-1).id, ErrorCode.FORBIDDEN, 'the token does not name this room'));
  await assert.rejects(refused, (e) => e instanceof TetherError && e.code === ErrorCode.FORBIDDEN);
  assert.equal(c.state, 'online', 'FORBIDDEN answers one JOIN; the connection stays');
  const unavailable = c.join('other', { after: 3 });
  assert.equal(hex(socket.sent.at(-1).body.subarray(0, 8)), '0000000000000003');
  socket.deliver(error(socket.sent.at(-1).id, ErrorCode.UNAVAILABLE, 'no state daemon'));
  await assert.rejects(unavailable, (e) => e.code === ErrorCode.UNAVAILABLE);
  await assert.rejects(c.join(''), TypeError, 'a bad name is never sent');
  await assert.rejects(c.join('lobby', { after: -1 }), TypeError, 'nor a bad after');
  await assert.rejects(c.join('lobby', { after: 1.5 }), TypeError);
  assert.equal(c.state, 'online');

  // Messages, each seq once; a jump is a gap; the broadcast needs no join.
  socket.deliver(room(0, 'lobby', [[42n, 'a'], [43n, 'b']]), room(0, 'lobby', [[43n, 'b'], [46n, 'c']]));
  socket.deliver(room(RoomFlag.CONFLATED, '', [[9n, 'all']]));
  assert.deepEqual(seen, ['lobby #42 a', 'lobby #43 b', 'lobby #46 c gap 2', ' #9 all']);

  const left = c.leave('lobby');
  const leave = socket.sent.at(-1);
  assert.equal(leave.kind, Kind.LEAVE);
  assert.equal(new TextDecoder().decode(leave.body), 'lobby');
  socket.deliver(roomOk(leave.id, 'lobby', 46, false));
  assert.deepEqual(await left, { room: 'lobby', seq: 46n, member: false });
  assert.deepEqual([...c.joined], []);
  c.stop();
});

test('after a drop the client resumes and JOINs its rooms after the last seq it saw', async () => {
  const c = client();
  const first = await online(c);
  const seen = rooms(c);
  const rejoins = [];
  c.addEventListener('rejoin', (e) => rejoins.push(e.detail));
  const joins = [c.join('lobby'), c.join('demo/a')];
  first.deliver(roomOk(first.sent.at(-2).id, 'lobby', 0), roomOk(first.sent.at(-1).id, 'demo/a', 7));
  await Promise.all(joins);
  first.deliver(room(0, 'lobby', [[1n, 'one'], [2n, 'two']]));

  const pending = c.join('late');
  first.drop();
  await assert.rejects(pending, (e) => e.code === 0, 'a JOIN in flight is rejected with the connection');
  await until('RESUME', () => FakeSocket.all.length === 2 && FakeSocket.all[1].sent.length === 1);
  const second = FakeSocket.all[1];
  assert.equal(second.sent[0].kind, Kind.RESUME);
  second.deliver(loginOk(second.sent[0].id, 's-1', 'r-2'));
  await until('online', () => c.state === 'online');
  const again = second.sent.slice(1);
  assert.deepEqual(again.map((f) => f.kind), [Kind.JOIN, Kind.JOIN]);
  assert.deepEqual(
    again.map((f) => [hex(f.body.subarray(0, 8)), new TextDecoder().decode(f.body.subarray(8))]),
    [['0000000000000002', 'lobby'], ['0000000000000007', 'demo/a']],
    'each joined room, after the last seq seen (or ROOM_OK said)',
  );
  // A live window before the replay shows the gap; the replay, overlapping what was seen,
  // fills it, each seq once; a room refused now is forgotten.
  second.deliver(room(0, 'lobby', [[5n, 'five']]));
  second.deliver(room(RoomFlag.REPLAY, 'lobby', [[2n, 'two'], [3n, 'three'], [4n, 'four'], [5n, 'five']]), roomOk(again[0].id, 'lobby', 5));
  second.deliver(error(again[1].id, ErrorCode.FORBIDDEN, 'no longer allowed'));
  second.deliver(room(0, 'lobby', [[6n, 'six']]));
  assert.deepEqual(seen, [
    'lobby #1 one',
    'lobby #2 two',
    'lobby #5 five gap 2',
    'lobby #3 three replay',
    'lobby #4 four replay',
    'lobby #6 six',
  ]);
  await until('both rejoins answered', () => rejoins.length === 2);
  assert.equal(rejoins.find((r) => r.room === 'lobby').ok.seq, 5n);
  assert.equal(rejoins.find((r) => r.room === 'demo/a').error.code, ErrorCode.FORBIDDEN);
  assert.deepEqual([...c.joined], ['lobby']);

  // A malformed ROOM is a broken connection, as any bad message.
  second.deliver(encodeFrame(Kind.ROOM, 1n, new Uint8Array([0, 9, 1])));
  assert.equal(c.state, 'waiting');
  c.stop();
});
