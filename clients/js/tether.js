// @ts-check
/**
 * Tether's browser client: one long-lived WebSocket to a gateway, speaking the v1 frames of
 * doc/protocol.md inside binary messages (subprotocol `tether.v1`).
 *
 * What it does for the page:
 * - finds a gateway through ipconfig's `GET /ip_list` (best first), dialling the first that
 *   answers and falling back to the next;
 * - logs in with a token (a JWT the page gets from its own account service), then keeps the
 *   session alive with PINGs every third of the heartbeat the gateway announced;
 * - delivers pushes (`push` events) and acknowledges each, once, even when the state daemon
 *   sends it again;
 * - sends requests (`request()`), matched to their replies by id;
 * - joins and leaves rooms (`join()`, `leave()`) and delivers their messages (`room` events),
 *   each sequence number once, saying how many were skipped; after it resumes (or logs in
 *   anew) it JOINs every room it had joined with the last sequence number it saw, so the
 *   room's history replays what it missed;
 * - follows GOAWAY (the gateway is draining) and survives drops: it goes back to `/ip_list`,
 *   waits with exponential backoff and full jitter, and RESUMEs its session (its
 *   unacknowledged pushes come again) — on any gateway of the host — or logs in again when
 *   the session cannot be resumed;
 * - tells the page what it is doing through `state` events.
 *
 * No dependencies; an ES module for browsers (it needs `WebSocket`, `fetch`, `EventTarget`,
 * `TextEncoder`, `DataView` with BigInt). Type-checked with `tsc --checkJs` from JSDoc.
 */

/** Client kinds (doc/protocol.md, "Client kinds"). */
export const Kind = Object.freeze({
  LOGIN: 0x01,
  LOGIN_OK: 0x02,
  PING: 0x03,
  PONG: 0x04,
  DATA: 0x05,
  PUSH: 0x06,
  ACK: 0x07,
  RESUME: 0x08,
  GOAWAY: 0x09,
  ERROR: 0x0a,
  ROOM: 0x0b,
  JOIN: 0x0c,
  LEAVE: 0x0d,
  ROOM_OK: 0x0e,
});

/** Error codes (doc/protocol.md, "Error codes"). */
export const ErrorCode = Object.freeze({
  BAD_FRAME: 1,
  FRAME_TOO_LARGE: 2,
  UNKNOWN_KIND: 3,
  NOT_LOGGED_IN: 4,
  AUTH_FAILED: 5,
  OVERLOADED: 6,
  NO_BACKEND: 7,
  RATE_LIMITED: 8,
  SLOW_CONSUMER: 9,
  TIMEOUT: 10,
  UNAVAILABLE: 11,
  KICKED: 12,
  INTERNAL: 13,
  BUSY: 14,
  REQUEST_TIMEOUT: 15,
  FORBIDDEN: 16,
});

/** ROOM body flags (doc/protocol.md, "Rooms"). */
export const RoomFlag = Object.freeze({
  /** The room keeps only the latest message of a window; earlier ones were dropped. */
  CONFLATED: 0x01,
  /** The messages come from the room's history, answering a JOIN's `after`. */
  REPLAY: 0x02,
});

/** Longest room name, in UTF-8 bytes. */
export const MAX_ROOM_NAME = 128;

/** Header flag on DATA: the gateway may send it to another node if the first one fails. */
export const FLAG_RESEND_SAFE = 0x01;

const HEADER = 14;
const SUBPROTOCOL = 'tether.v1';
const CODE_NAMES = Object.fromEntries(Object.entries(ErrorCode).map(([k, v]) => [v, k]));

/** An ERROR frame from the gateway, or a request that could not be answered. */
export class TetherError extends Error {
  /**
   * @param {number} code  the v1 error code, or 0 when the connection was lost
   * @param {string} reason
   */
  constructor(code, reason) {
    super(`${CODE_NAMES[code] ?? (code === 0 ? 'DISCONNECTED' : `code ${code}`)}: ${reason}`);
    this.name = 'TetherError';
    this.code = code;
    this.reason = reason;
  }
}

/**
 * One v1 frame.
 * @typedef {{ kind: number, flags: number, id: bigint, body: Uint8Array }} Frame
 */

/**
 * Encodes one v1 frame.
 * @param {number} kind
 * @param {bigint} id
 * @param {Uint8Array} body
 * @param {number} [flags]
 * @returns {Uint8Array}
 */
export function encodeFrame(kind, id, body, flags = 0) {
  const out = new Uint8Array(HEADER + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, 10 + body.length);
  view.setUint8(4, kind);
  view.setUint8(5, flags);
  view.setBigUint64(6, id);
  out.set(body, HEADER);
  return out;
}

/**
 * Decodes the whole v1 frames of one binary message (a message never ends inside a frame).
 * @param {ArrayBuffer} message
 * @returns {Frame[]}
 */
export function decodeFrames(message) {
  const bytes = new Uint8Array(message);
  const view = new DataView(message);
  /** @type {Frame[]} */
  const frames = [];
  let at = 0;
  while (at < bytes.length) {
    if (bytes.length - at < HEADER) throw new Error('a message ends inside a frame header');
    const len = view.getUint32(at);
    if (len < 10) throw new Error(`bad frame length ${len}`);
    const end = at + 4 + len;
    if (end > bytes.length) throw new Error('a message ends inside a frame');
    frames.push({
      kind: view.getUint8(at + 4),
      flags: view.getUint8(at + 5),
      id: view.getBigUint64(at + 6),
      body: bytes.subarray(at + HEADER, end),
    });
    at = end;
  }
  return frames;
}

/**
 * The ERROR body: u16 code, then a UTF-8 reason.
 * @param {Uint8Array} body
 * @returns {{ code: number, reason: string }}
 */
export function decodeError(body) {
  if (body.length < 2) return { code: 0, reason: 'malformed ERROR' };
  return {
    code: (body[0] << 8) | body[1],
    reason: new TextDecoder().decode(body.subarray(2)),
  };
}

/**
 * Whether `name` may name a room: 1–128 bytes of UTF-8 without control characters.
 * @param {string} name
 */
export function validRoomName(name) {
  const bytes = new TextEncoder().encode(name).length;
  return bytes >= 1 && bytes <= MAX_ROOM_NAME && !/\p{Cc}/u.test(name);
}

/**
 * A JOIN body: u64 `after` (0 = no replay), then the room name.
 * @param {string} room
 * @param {bigint} after
 * @returns {Uint8Array}
 */
export function encodeJoin(room, after) {
  const name = new TextEncoder().encode(room);
  const out = new Uint8Array(8 + name.length);
  new DataView(out.buffer).setBigUint64(0, after);
  out.set(name, 8);
  return out;
}

/**
 * One message of a ROOM frame.
 * @typedef {{ seq: bigint, payload: Uint8Array }} RoomMessage
 */

/**
 * A ROOM body: `flags u8 | name_len u8 | name | n × (seq u64 | len u32 | payload)`. The empty
 * name is the broadcast. Throws on a body that does not hold whole messages.
 * @param {Uint8Array} body
 * @returns {{ flags: number, room: string, messages: RoomMessage[] }}
 */
export function decodeRoom(body) {
  if (body.length < 2) throw new Error('a ROOM body ends inside its head');
  const view = new DataView(body.buffer, body.byteOffset, body.length);
  const flags = body[0];
  const nameEnd = 2 + body[1];
  if (nameEnd > body.length) throw new Error('a ROOM body ends inside its name');
  const room = new TextDecoder('utf-8', { fatal: true }).decode(body.subarray(2, nameEnd));
  /** @type {RoomMessage[]} */
  const messages = [];
  let at = nameEnd;
  while (at < body.length) {
    if (body.length - at < 12) throw new Error('a ROOM body ends inside a message head');
    const seq = view.getBigUint64(at);
    const end = at + 12 + view.getUint32(at + 8);
    if (end > body.length) throw new Error('a ROOM body ends inside a message');
    messages.push({ seq, payload: body.slice(at + 12, end) });
    at = end;
  }
  return { flags, room, messages };
}

/**
 * Milliseconds to wait before trying again: exponential in `attempt` from `min` to `max`,
 * with full jitter (a uniformly random share of it), so a crowd of clients dropped at once
 * does not come back at once.
 * @param {number} attempt  0 for the first retry
 * @param {number} min
 * @param {number} max
 * @param {() => number} [random]
 */
export function backoffMs(attempt, min, max, random = Math.random) {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.max(min / 2, ceiling * random());
}

/**
 * The `retry_after_ms=N;` hint a BUSY reason starts with, or null.
 * @param {string} reason
 */
export function retryAfterMs(reason) {
  const m = /^retry_after_ms=(\d+);/.exec(reason);
  return m ? Number(m[1]) : null;
}

/**
 * A gateway as `/ip_list` lists it, with the WebSocket URL the client dials.
 * @typedef {{ id: string, url: string }} Gateway
 */

/**
 * The WebSocket URLs of `/ip_list`'s answer, best first: `wss` when `secure`, else `ws`
 * (gateways without that transport are left out).
 * @param {any} list  the parsed JSON of `/ip_list`
 * @param {boolean} secure
 * @returns {Gateway[]}
 */
export function gatewaysOf(list, secure) {
  const scheme = secure ? 'wss' : 'ws';
  /** @type {Gateway[]} */
  const out = [];
  for (const g of Array.isArray(list?.gateways) ? list.gateways : []) {
    const addr = g?.transports?.[scheme];
    if (typeof g?.id === 'string' && typeof addr === 'string' && addr.length > 0) {
      out.push({ id: g.id, url: `${scheme}://${addr}/ws` });
    }
  }
  return out;
}

/**
 * The `/ip_list` URL of an ipconfig base URL, keeping a path prefix a proxy may put it under
 * (`https://api.example/tether` → `https://api.example/tether/ip_list`), as the gateways'
 * `ipconfig` URLs do.
 * @param {string} base
 * @returns {URL}
 */
export function ipListUrl(base) {
  return new URL('ip_list', base.endsWith('/') ? base : `${base}/`);
}

/**
 * @typedef {object} Options
 * @property {string} [ipconfig]  base URL of ipconfig (`/ip_list` is fetched from it, below
 *   any path it has)
 * @property {string[]} [gateways]  WebSocket URLs to dial instead of asking ipconfig
 * @property {string | (() => string | Promise<string>)} token  the login token, or a
 *   function that gets a fresh one (called for every LOGIN)
 * @property {boolean} [secure]  dial `wss` (default: when the page itself is https)
 * @property {number} [backoffMinMs]  first reconnect delay (default 250)
 * @property {number} [backoffMaxMs]  longest reconnect delay (default 10000)
 * @property {number} [connectTimeoutMs]  a dial or login not done by then is abandoned
 *   (default 10000)
 * @property {number} [requestTimeoutMs]  a request not answered by then is rejected
 *   (default 35000; the gateway itself answers REQUEST_TIMEOUT after its own 30 s)
 */

/**
 * The client's state, told through `state` events.
 * - `idle`: not started, or stopped with `stop()`;
 * - `connecting`: finding a gateway and dialling it;
 * - `authenticating`: connected, LOGIN or RESUME sent;
 * - `online`: logged in; requests and pushes flow;
 * - `waiting`: the connection was lost; the next attempt is scheduled;
 * - `ended`: the session was ended for good (KICKED by another login of the same device, or
 *   the token was refused); `start()` again to log in anew.
 * @typedef {'idle' | 'connecting' | 'authenticating' | 'online' | 'waiting' | 'ended'} State
 */

/**
 * @typedef {object} StateDetail
 * @property {State} state
 * @property {string | null} gateway  the WebSocket URL in use
 * @property {string | null} session  the session id from LOGIN_OK
 * @property {boolean} resumed  the session was resumed rather than logged in anew
 * @property {number} attempt  failed attempts since the last time online
 * @property {string} [reason]  why the state changed, when it is not the usual course
 */

/**
 * A room message, as the `room` event tells it.
 * @typedef {object} RoomDetail
 * @property {string} room  the room's name; "" for the broadcast
 * @property {bigint} seq  its sequence number in the room
 * @property {Uint8Array} payload
 * @property {number} flags  the ROOM frame's flags ({@link RoomFlag})
 * @property {boolean} replay  from the room's history (a JOIN's `after`)
 * @property {boolean} conflated  earlier messages of its window were dropped on purpose
 * @property {number} gap  sequence numbers skipped since the last one seen in this room (0
 *   normally; more when this client was too slow or offline and the history no longer
 *   held them)
 */

/**
 * What ROOM_OK said.
 * @typedef {{ room: string, seq: bigint, member: boolean }} RoomOk
 */

/**
 * A Tether connection that logs in, heartbeats, takes pushes and resumes by itself.
 *
 * Events: `state` (detail: {@link StateDetail}), `push` (detail: `{ id: bigint, payload:
 * Uint8Array }`, each message id once), `data` (detail: `{ id: bigint, payload: Uint8Array
 * }`, every reply, beside the promise `request()` returned), `room` (detail:
 * {@link RoomDetail}, one per message, each sequence number of a room once), `rejoin`
 * (detail: `{ room: string, ok: RoomOk | null, error: TetherError | null }`, the answer to a
 * JOIN the client sent by itself after coming back).
 */
export class TetherClient extends EventTarget {
  /** @param {Options} options */
  constructor(options) {
    super();
    if (!options || (!options.ipconfig && !options.gateways?.length)) {
      throw new Error('TetherClient needs ipconfig or gateways');
    }
    if (!options.token) throw new Error('TetherClient needs a token');
    this.options = {
      backoffMinMs: 250,
      backoffMaxMs: 10_000,
      connectTimeoutMs: 10_000,
      requestTimeoutMs: 35_000,
      secure: typeof location !== 'undefined' && location.protocol === 'https:',
      ...options,
    };
    /** @type {State} */
    this.state = 'idle';
    /** @type {WebSocket | null} */
    this.socket = null;
    /** @type {string | null} */
    this.gateway = null;
    /** @type {string | null} */
    this.session = null;
    /** @type {string | null} */
    this.resumeToken = null;
    this.resumed = false;
    this.heartbeatS = 30;
    this.attempt = 0;
    this.nextId = 1n;
    /** @type {Map<bigint, { resolve: (p: Uint8Array) => void, reject: (e: Error) => void, timer: any }>} */
    this.pending = new Map();
    /** @type {Map<bigint, { resolve: (ok: RoomOk) => void, reject: (e: Error) => void, timer: any }>} JOINs and LEAVEs awaiting ROOM_OK */
    this.roomPending = new Map();
    /** @type {Set<string>} rooms joined through `join()` (joined again after a reconnect) */
    this.joined = new Set();
    /** @type {Map<string, { last: bigint, seen: Set<bigint> }>} per room: the highest sequence number seen, and the recent ones delivered (each once) */
    this.seqs = new Map();
    /** Push ids already delivered to the page, oldest first (bounded). */
    this.seen = new Set();
    /** @type {string | null} a gateway that said GOAWAY: avoided on the next attempt */
    this.leaving = null;
    /** @type {any} the next attempt, or a LOGIN/RESUME sent again after BUSY */
    this.timer = null;
    /** @type {any} the deadline of the current LOGIN/RESUME */
    this.authTimer = null;
    /** @type {any} */ this.heartbeat = null;
    /** @type {bigint | null} the PING still unanswered */
    this.pingId = null;
    /** @type {bigint | null} the LOGIN or RESUME awaiting its answer */
    this.authId = null;
    this.generation = 0;
  }

  /** Starts connecting (and keeps the connection up until `stop()`). */
  start() {
    if (this.state !== 'idle' && this.state !== 'ended') return;
    this.attempt = 0;
    this.connect();
  }

  /** Closes the connection and stops reconnecting; the session can still be resumed. */
  stop() {
    this.generation++;
    this.drop('stopped');
    this.setState('idle');
  }

  /**
   * Sends a request (DATA) and resolves with the node's reply, or rejects with a
   * {@link TetherError} (the ERROR the gateway answered, or code 0 when the connection was
   * lost before an answer).
   * @param {Uint8Array | string} payload
   * @param {{ resendSafe?: boolean }} [options]  resendSafe: the request may run twice, so
   *   the gateway may send it to another node if its node fails
   * @returns {Promise<Uint8Array>}
   */
  request(payload, options = {}) {
    const body = typeof payload === 'string' ? new TextEncoder().encode(payload) : payload;
    if (this.state !== 'online' || !this.socket) {
      return Promise.reject(new TetherError(0, `not online (${this.state})`));
    }
    const id = this.takeId();
    const socket = this.socket;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new TetherError(ErrorCode.REQUEST_TIMEOUT, 'no answer in time'));
      }, this.options.requestTimeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      socket.send(encodeFrame(Kind.DATA, id, body, options.resendSafe ? FLAG_RESEND_SAFE : 0));
    });
  }

  /**
   * Joins `room` and resolves with ROOM_OK (`seq` is the room's latest number), or rejects
   * with a {@link TetherError}: FORBIDDEN (16) when the login token's `rooms` claim does not
   * name the room or a limit is reached, UNAVAILABLE (11) when the gateway has no state
   * daemon link, code 0 when the connection was lost first. Once joined, the client joins it
   * again by itself whenever it comes back online, asking for what it missed.
   * @param {string} room
   * @param {{ after?: bigint | number }} [options]  after: replay the room's history after
   *   this sequence number (0, the default: no replay)
   * @returns {Promise<RoomOk>}
   */
  join(room, options = {}) {
    if (!validRoomName(room)) return Promise.reject(new TypeError(`not a room name: ${JSON.stringify(room)}`));
    const after = toU64(options.after ?? 0);
    if (after === null) return Promise.reject(new TypeError(`not a sequence number: ${options.after}`));
    // The replay's gaps count from `after`; without one, from the room's latest number.
    if (after > 0n && !this.seqs.has(room)) this.seqs.set(room, { last: after, seen: new Set() });
    return this.roomCommand(Kind.JOIN, encodeJoin(room, after)).then(
      (ok) => {
        if (ok.member) this.joined.add(room);
        if (!this.seqs.has(room)) this.seqs.set(room, { last: ok.seq, seen: new Set() });
        return ok;
      },
      (error) => {
        if (!this.joined.has(room)) this.seqs.delete(room);
        throw error;
      },
    );
  }

  /**
   * Leaves `room` (resolves with ROOM_OK, `member` false; also when it was not a member).
   * @param {string} room
   * @returns {Promise<RoomOk>}
   */
  leave(room) {
    if (!validRoomName(room)) return Promise.reject(new TypeError(`not a room name: ${JSON.stringify(room)}`));
    this.joined.delete(room);
    this.seqs.delete(room);
    return this.roomCommand(Kind.LEAVE, new TextEncoder().encode(room));
  }

  /**
   * Sends a JOIN or LEAVE; resolves with its ROOM_OK.
   * @param {number} kind
   * @param {Uint8Array} body
   * @returns {Promise<RoomOk>}
   */
  roomCommand(kind, body) {
    if (this.state !== 'online' || !this.socket) {
      return Promise.reject(new TetherError(0, `not online (${this.state})`));
    }
    const id = this.takeId();
    const socket = this.socket;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.roomPending.delete(id);
        reject(new TetherError(ErrorCode.REQUEST_TIMEOUT, 'no answer in time'));
      }, this.options.requestTimeoutMs);
      this.roomPending.set(id, { resolve, reject, timer });
      socket.send(encodeFrame(kind, id, body));
    });
  }

  /** Back online: JOIN every joined room again, after the last sequence number seen. */
  rejoin() {
    for (const room of this.joined) {
      const after = this.seqs.get(room)?.last ?? 0n;
      this.roomCommand(Kind.JOIN, encodeJoin(room, after)).then(
        (ok) => this.dispatchEvent(new CustomEvent('rejoin', { detail: { room, ok, error: null } })),
        (error) => {
          // A room the token no longer allows cannot be joined again; anything else (the
          // state link down, the connection lost) is tried at the next reconnect.
          if (error instanceof TetherError && error.code === ErrorCode.FORBIDDEN) this.joined.delete(room);
          this.dispatchEvent(new CustomEvent('rejoin', { detail: { room, ok: null, error } }));
        },
      );
    }
  }

  // -- connection lifecycle -------------------------------------------------------------

  /** @param {State} state @param {string} [reason] */
  setState(state, reason) {
    this.state = state;
    /** @type {StateDetail} */
    const detail = {
      state,
      gateway: this.gateway,
      session: this.session,
      resumed: this.resumed,
      attempt: this.attempt,
    };
    if (reason !== undefined) detail.reason = reason;
    this.dispatchEvent(new CustomEvent('state', { detail }));
  }

  takeId() {
    const id = this.nextId;
    this.nextId += 1n;
    return id;
  }

  async connect() {
    const generation = ++this.generation;
    this.setState('connecting');
    let candidates;
    try {
      candidates = await this.candidates();
    } catch (e) {
      if (generation === this.generation) this.retry(`no gateway: ${errorText(e)}`);
      return;
    }
    if (generation !== this.generation) return;
    if (candidates.length === 0) {
      this.retry('no gateway offers this transport');
      return;
    }
    // A gateway that just said GOAWAY goes last, in case ipconfig still lists it.
    candidates.sort((a, b) => Number(a === this.leaving) - Number(b === this.leaving));
    this.leaving = null;
    for (const url of candidates) {
      const socket = await this.dial(url, generation);
      if (generation !== this.generation) {
        socket?.close();
        return;
      }
      if (socket) {
        this.adopt(socket, url, generation);
        return;
      }
    }
    this.retry('no gateway answered');
  }

  /** @returns {Promise<string[]>} WebSocket URLs, best first */
  async candidates() {
    if (this.options.gateways?.length) return [...this.options.gateways];
    const response = await fetch(ipListUrl(this.options.ipconfig ?? ''), {
      cache: 'no-store',
    });
    if (!response.ok) throw new Error(`/ip_list answered ${response.status}`);
    return gatewaysOf(await response.json(), this.options.secure).map((g) => g.url);
  }

  /**
   * Opens a WebSocket to `url`; null when it fails or takes too long.
   * @param {string} url
   * @param {number} generation
   * @returns {Promise<WebSocket | null>}
   */
  dial(url, generation) {
    return new Promise((resolve) => {
      let socket;
      try {
        socket = new WebSocket(url, SUBPROTOCOL);
      } catch {
        resolve(null);
        return;
      }
      socket.binaryType = 'arraybuffer';
      const timer = setTimeout(() => {
        socket.close();
        resolve(null);
      }, this.options.connectTimeoutMs);
      socket.onopen = () => {
        clearTimeout(timer);
        resolve(generation === this.generation ? socket : (socket.close(), null));
      };
      socket.onerror = () => {
        clearTimeout(timer);
        resolve(null);
      };
    });
  }

  /**
   * @param {WebSocket} socket
   * @param {string} url
   * @param {number} generation
   */
  async adopt(socket, url, generation) {
    this.socket = socket;
    this.gateway = url;
    socket.onmessage = (event) => {
      if (this.socket === socket) this.onMessage(/** @type {ArrayBuffer} */ (event.data));
    };
    socket.onclose = (event) => {
      if (this.socket === socket) this.lost(`closed (${event.code}${event.reason ? ` ${event.reason}` : ''})`);
    };
    socket.onerror = () => {};
    this.setState('authenticating');
    this.authTimer = setTimeout(() => {
      if (this.socket === socket && this.state === 'authenticating') this.lost('login timed out');
    }, this.options.connectTimeoutMs);
    await this.authenticate(generation);
  }

  /**
   * Sends RESUME when a session can be resumed, else LOGIN with a fresh token.
   * @param {number} generation
   */
  async authenticate(generation) {
    const id = this.takeId();
    this.authId = id;
    if (this.resumeToken) {
      this.socket?.send(encodeFrame(Kind.RESUME, id, new TextEncoder().encode(this.resumeToken)));
      return;
    }
    let token;
    try {
      const t = this.options.token;
      token = typeof t === 'function' ? await t() : t;
    } catch (e) {
      if (generation === this.generation) this.lost(`no token: ${errorText(e)}`);
      return;
    }
    if (generation !== this.generation || !this.socket) return;
    this.socket.send(encodeFrame(Kind.LOGIN, id, new TextEncoder().encode(token)));
  }

  /** @param {ArrayBuffer} message */
  onMessage(message) {
    let frames;
    try {
      frames = decodeFrames(message);
    } catch (e) {
      this.lost(`bad message: ${errorText(e)}`);
      return;
    }
    for (const frame of frames) {
      if (!this.socket) return;
      this.onFrame(frame);
    }
  }

  /** @param {Frame} frame */
  onFrame(frame) {
    switch (frame.kind) {
      case Kind.LOGIN_OK:
        this.onLoginOk(frame);
        break;
      case Kind.PONG:
        if (frame.id === this.pingId) this.pingId = null;
        break;
      case Kind.DATA: {
        const waiting = this.pending.get(frame.id);
        const payload = frame.body.slice();
        this.dispatchEvent(new CustomEvent('data', { detail: { id: frame.id, payload } }));
        if (waiting) {
          this.pending.delete(frame.id);
          clearTimeout(waiting.timer);
          waiting.resolve(payload);
        }
        break;
      }
      case Kind.PUSH:
        this.onPush(frame);
        break;
      case Kind.GOAWAY:
        // Reconnect through /ip_list now, resuming there; this gateway is draining.
        this.leaving = this.gateway;
        this.attempt = 0;
        this.lost('GOAWAY', 0);
        break;
      case Kind.ERROR:
        this.onError(frame);
        break;
      case Kind.ROOM:
        this.onRoom(frame);
        break;
      case Kind.ROOM_OK:
        this.onRoomOk(frame);
        break;
      default:
        break;
    }
  }

  /** @param {Frame} frame */
  onLoginOk(frame) {
    if (frame.id !== this.authId) return;
    let answer;
    try {
      answer = JSON.parse(new TextDecoder().decode(frame.body));
    } catch {
      this.lost('malformed LOGIN_OK');
      return;
    }
    this.resumed = this.resumeToken !== null && this.session === answer.session;
    this.session = typeof answer.session === 'string' ? answer.session : null;
    this.resumeToken = answer.resume_token ? String(answer.resume_token) : null;
    this.heartbeatS = Number(answer.heartbeat_s) > 0 ? Number(answer.heartbeat_s) : 30;
    this.authId = null;
    this.attempt = 0;
    clearTimeout(this.authTimer);
    clearTimeout(this.timer);
    this.startHeartbeat();
    this.setState('online');
    this.rejoin();
  }

  /**
   * A ROOM frame: one `room` event per message not delivered before, in the frame's order.
   * A live window may come before the replay that fills the gap it showed (the replay
   * answers a JOIN sent after coming back), so the replayed messages come after it, with
   * `gap` 0: order by `seq` to show a room as a log.
   * @param {Frame} frame
   */
  onRoom(frame) {
    let batch;
    try {
      batch = decodeRoom(frame.body);
    } catch (e) {
      this.lost(`bad ROOM: ${errorText(e)}`);
      return;
    }
    const { flags, room } = batch;
    let track = this.seqs.get(room);
    if (!track) {
      track = { last: (batch.messages[0]?.seq ?? 1n) - 1n, seen: new Set() };
      this.seqs.set(room, track);
    }
    for (const { seq, payload } of batch.messages) {
      if (track.seen.has(seq)) continue; // delivered already (a replay overlapping live ones)
      track.seen.add(seq);
      if (track.seen.size > 1024) {
        const oldest = track.seen.values().next().value;
        if (oldest !== undefined) track.seen.delete(oldest);
      }
      const gap = seq > track.last ? Number(seq - track.last - 1n) : 0;
      if (seq > track.last) track.last = seq;
      /** @type {RoomDetail} */
      const detail = {
        room,
        seq,
        payload,
        flags,
        replay: (flags & RoomFlag.REPLAY) !== 0,
        conflated: (flags & RoomFlag.CONFLATED) !== 0,
        gap,
      };
      this.dispatchEvent(new CustomEvent('room', { detail }));
    }
  }

  /** @param {Frame} frame */
  onRoomOk(frame) {
    const waiting = this.roomPending.get(frame.id);
    if (!waiting) return;
    this.roomPending.delete(frame.id);
    clearTimeout(waiting.timer);
    let answer;
    try {
      answer = JSON.parse(new TextDecoder().decode(frame.body));
    } catch {
      waiting.reject(new TetherError(0, 'malformed ROOM_OK'));
      return;
    }
    waiting.resolve({
      room: String(answer.room),
      seq: BigInt(Number.isSafeInteger(answer.seq) && answer.seq > 0 ? answer.seq : 0),
      member: answer.member === true,
    });
  }

  /** @param {Frame} frame */
  onPush(frame) {
    const id = frame.id;
    // ACK every copy (the daemon re-sends until it hears one); show the page each id once.
    this.socket?.send(encodeFrame(Kind.ACK, id, new Uint8Array(0)));
    if (this.seen.has(id)) return;
    this.seen.add(id);
    if (this.seen.size > 4096) {
      const oldest = this.seen.values().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    this.dispatchEvent(new CustomEvent('push', { detail: { id, payload: frame.body.slice() } }));
  }

  /** @param {Frame} frame */
  onError(frame) {
    const { code, reason } = decodeError(frame.body);
    const waiting = this.pending.get(frame.id) ?? this.roomPending.get(frame.id);
    if (waiting && frame.id !== 0n) {
      this.pending.delete(frame.id);
      this.roomPending.delete(frame.id);
      clearTimeout(waiting.timer);
      waiting.reject(new TetherError(code, reason));
    }
    if (frame.id !== 0n && frame.id === this.authId) {
      this.onAuthError(code, reason);
      return;
    }
    switch (code) {
      case ErrorCode.KICKED:
        this.end(`KICKED: ${reason}`);
        break;
      case ErrorCode.NO_BACKEND:
      case ErrorCode.RATE_LIMITED:
      case ErrorCode.UNAVAILABLE:
      case ErrorCode.INTERNAL:
      case ErrorCode.BUSY:
      case ErrorCode.REQUEST_TIMEOUT:
      case ErrorCode.FORBIDDEN:
        break; // answered one request; the connection stays
      default:
        this.lost(`${CODE_NAMES[code] ?? code}: ${reason}`);
    }
  }

  /**
   * The LOGIN or RESUME was refused.
   * @param {number} code
   * @param {string} reason
   */
  onAuthError(code, reason) {
    const resuming = this.resumeToken !== null;
    if (code === ErrorCode.BUSY || code === ErrorCode.UNAVAILABLE) {
      // The gateway asks us to come back later (or its state link is down): same socket.
      const hint = retryAfterMs(reason) ?? backoffMs(this.attempt++, this.options.backoffMinMs, this.options.backoffMaxMs);
      const wait = hint * (0.5 + Math.random());
      const generation = this.generation;
      this.timer = setTimeout(() => {
        if (generation === this.generation && this.state === 'authenticating') this.authenticate(generation);
      }, wait);
      return;
    }
    if (resuming && code === ErrorCode.AUTH_FAILED) {
      // The session is gone (expired, or resumed elsewhere): log in anew at once.
      this.resumeToken = null;
      this.session = null;
      this.attempt = 0;
      this.lost(`resume refused (${reason}); logging in again`, 0);
      return;
    }
    if (code === ErrorCode.AUTH_FAILED) {
      this.end(`login refused: ${reason}`);
      return;
    }
    this.lost(`${CODE_NAMES[code] ?? code}: ${reason}`);
  }

  startHeartbeat() {
    clearInterval(this.heartbeat);
    this.pingId = null;
    const socket = this.socket;
    const everyMs = Math.max(1000, (this.heartbeatS * 1000) / 3);
    this.heartbeat = setInterval(() => {
      if (this.socket !== socket || !socket) return;
      if (this.pingId !== null) {
        // A whole period without PONG: the connection is dead even if the socket says not.
        this.lost('no PONG');
        return;
      }
      this.pingId = this.takeId();
      socket.send(encodeFrame(Kind.PING, this.pingId, new Uint8Array(0)));
    }, everyMs);
  }

  /**
   * Forgets the socket and everything waiting on it.
   * @param {string} reason
   */
  drop(reason) {
    clearTimeout(this.timer);
    clearTimeout(this.authTimer);
    clearInterval(this.heartbeat);
    this.heartbeat = null;
    this.authId = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onmessage = null;
      socket.onclose = null;
      try {
        socket.close(1000);
      } catch {
        // already closed
      }
    }
    for (const waiting of [...this.pending.values(), ...this.roomPending.values()]) {
      clearTimeout(waiting.timer);
      waiting.reject(new TetherError(0, reason));
    }
    this.pending.clear();
    this.roomPending.clear();
  }

  /**
   * The connection is gone: try again after a backoff (or after `delayMs`).
   * @param {string} reason
   * @param {number} [delayMs]
   */
  lost(reason, delayMs) {
    this.drop(reason);
    this.retry(reason, delayMs);
  }

  /**
   * @param {string} reason
   * @param {number} [delayMs]
   */
  retry(reason, delayMs) {
    const wait = delayMs ?? backoffMs(this.attempt, this.options.backoffMinMs, this.options.backoffMaxMs);
    this.attempt++;
    const generation = ++this.generation;
    this.setState('waiting', reason);
    this.timer = setTimeout(() => {
      if (generation === this.generation) this.connect();
    }, wait);
  }

  /**
   * The session is over for good.
   * @param {string} reason
   */
  end(reason) {
    this.generation++;
    this.drop(reason);
    this.resumeToken = null;
    this.session = null;
    this.setState('ended', reason);
  }
}

/**
 * `n` as a u64, or null when it is not a whole number from 0 to 2^64 − 1.
 * @param {bigint | number} n
 */
function toU64(n) {
  try {
    const big = BigInt(n);
    return big >= 0n && big < 2n ** 64n ? big : null;
  } catch {
    return null;
  }
}

/** @param {unknown} e */
function errorText(e) {
  return e instanceof Error ? e.message : String(e);
}
