// The Node reference for bench/media.py: the seed's design for the in-call keypad, a `ws`
// server with a JavaScript Goertzel per stream. Not part of the product.
//
//   node bench/node/media_ref.js PORT
//
// Per media message: JSON.parse, base64 -> mu-law -> float, 8 Goertzel filters over the
// 160-sample frame, a row/column decision with twist and energy checks, two frames to
// confirm a key, and `*1` / `*2` decoded per stream. On SIGTERM it prints one JSON line:
// {"messages": N, "commands": {"raise": n, "lower": n}} and exits.
"use strict";
const { WebSocketServer } = require("ws");

const RATE = 8000;
const FREQS = [697, 770, 852, 941, 1209, 1336, 1477, 1633];
const KEYS = ["1", "2", "3", "A", "4", "5", "6", "B", "7", "8", "9", "C", "*", "0", "#", "D"];
const COEF = FREQS.map((f) => 2 * Math.cos((2 * Math.PI * f) / RATE));

// G.711 mu-law -> linear, scaled to [-1, 1).
const ULAW = new Float32Array(256);
for (let i = 0; i < 256; i++) {
  const u = ~i & 0xff;
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
  ULAW[i] = ((u & 0x80 ? 0x84 - t : t - 0x84) / 32768);
}

let messages = 0;
const commands = { raise: 0, lower: 0 };

class Stream {
  constructor() {
    this.samples = new Float32Array(160);
    this.power = new Float64Array(8);
    this.last = null; // candidate key of the previous frame
    this.down = null; // key held
    this.keys = "";
    this.lastKeyAt = 0;
  }

  frame(mulaw, now) {
    const n = mulaw.length < 160 ? mulaw.length : 160;
    const x = this.samples;
    let energy = 0;
    for (let i = 0; i < n; i++) {
      const v = ULAW[mulaw[i]];
      x[i] = v;
      energy += v * v;
    }
    for (let k = 0; k < 8; k++) {
      const c = COEF[k];
      let s1 = 0, s2 = 0;
      for (let i = 0; i < n; i++) {
        const s0 = x[i] + c * s1 - s2;
        s2 = s1;
        s1 = s0;
      }
      this.power[k] = s1 * s1 + s2 * s2 - c * s1 * s2;
    }
    const p = this.power;
    let row = 0, col = 4;
    for (let k = 1; k < 4; k++) if (p[k] > p[row]) row = k;
    for (let k = 5; k < 8; k++) if (p[k] > p[col]) col = k;
    let key = null;
    const sum = p[row] + p[col];
    if (p[row] > 4e-2 && p[col] > 4e-2 && p[col] < p[row] * 6.3 && p[row] < p[col] * 2.5 &&
        sum > energy * n * 0.35) {
      key = KEYS[row * 4 + (col - 4)];
      for (let k = 0; k < 8; k++) if (k !== row && k !== col && p[k] * 6.3 > p[k < 4 ? row : col]) key = null;
    }
    if (key !== null && key === this.last && this.down !== key) {
      this.down = key;
      this.press(key, now);
    } else if (key === null && this.last === null) {
      this.down = null;
    }
    this.last = key;
  }

  press(key, now) {
    if (now - this.lastKeyAt > 2000) this.keys = "";
    this.lastKeyAt = now;
    this.keys = (this.keys + key).slice(-2);
    if (this.keys === "*1") { commands.raise++; this.keys = ""; }
    else if (this.keys === "*2") { commands.lower++; this.keys = ""; }
  }
}

const port = Number(process.argv[2] || 8765);
const wss = new WebSocketServer({ port, host: "127.0.0.1", perMessageDeflate: false });
wss.on("connection", (ws) => {
  const stream = new Stream();
  ws.on("message", (data) => {
    messages++;
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (msg.event === "media" && msg.media && typeof msg.media.payload === "string") {
      stream.frame(Buffer.from(msg.media.payload, "base64"), Date.now());
    } else if (msg.event === "stop") {
      ws.close(1000);
    }
  });
});
wss.on("listening", () => console.log(JSON.stringify({ listening: port })));
process.on("SIGTERM", () => {
  console.log(JSON.stringify({ messages, commands }));
  process.exit(0);
});
