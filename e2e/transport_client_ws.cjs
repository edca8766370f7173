// A client nobody in Tether wrote: Node's `ws` package (installed by name under the target
// directory; NODE_PATH points at it), against the gateway's ws and wss listeners.
//
// Usage: node e2e/transport_client_ws.cjs URL CAFILE
//
// Sends two v1 PINGs in one binary message and one DATA in another, expects the PONGs and
// the echo; pings at the WebSocket level and expects the pong; closes with 1000 and expects
// 1000 back. Prints `ok NAME` per check and `ok` at the end; exits 1 on any failure.

const fs = require("fs");
const WebSocket = require("ws");

const [url, cafile] = process.argv.slice(2);
const HEADER = 14;

function v1(kind, id, body = Buffer.alloc(0)) {
  const frame = Buffer.alloc(HEADER + body.length);
  frame.writeUInt32BE(10 + body.length, 0);
  frame.writeUInt8(kind, 4);
  frame.writeUInt8(0, 5);
  frame.writeBigUInt64BE(BigInt(id), 6);
  body.copy(frame, HEADER);
  return frame;
}

function parse(message) {
  const frames = [];
  let at = 0;
  while (at < message.length) {
    const len = message.readUInt32BE(at);
    frames.push({
      kind: message.readUInt8(at + 4),
      id: Number(message.readBigUInt64BE(at + 6)),
      body: message.subarray(at + HEADER, at + 4 + len).toString(),
    });
    at += 4 + len;
  }
  if (at !== message.length) throw new Error("a message holds whole v1 frames");
  return frames;
}

function fail(why) {
  console.error("FAIL", why);
  process.exit(1);
}

const options = { handshakeTimeout: 10000 };
if (url.startsWith("wss:")) options.ca = fs.readFileSync(cafile);
const ws = new WebSocket(url, ["tether.v1"], options);
const timer = setTimeout(() => fail("timed out"), 15000);
const got = [];

ws.on("error", (e) => fail(e.message));
ws.on("open", () => {
  if (ws.protocol !== "tether.v1") fail(`subprotocol ${ws.protocol}`);
  ws.send(Buffer.concat([v1(3, 1), v1(3, 2)]));
  ws.send(v1(5, 3, Buffer.from("from node")));
});
ws.on("message", (data, isBinary) => {
  if (!isBinary) fail("a text message");
  got.push(...parse(data));
  if (got.length === 3) {
    got.sort((a, b) => a.id - b.id);
    const want = JSON.stringify([
      { kind: 4, id: 1, body: "" },
      { kind: 4, id: 2, body: "" },
      { kind: 5, id: 3, body: "from node" },
    ]);
    if (JSON.stringify(got) !== want) fail(`replies ${JSON.stringify(got)}`);
    console.log("ok echo and v1 ping");
    ws.ping(Buffer.from("node"));
  }
});
ws.on("pong", (payload) => {
  if (payload.toString() !== "node") fail(`pong ${payload}`);
  console.log("ok websocket ping");
  ws.close(1000, "done");
});
ws.on("close", (code) => {
  clearTimeout(timer);
  if (code !== 1000) fail(`close ${code}`);
  console.log("ok close");
  console.log("ok");
});
