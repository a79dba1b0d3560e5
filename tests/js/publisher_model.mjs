// The idempotent publisher's bookkeeping (resends after reconnects, renumbering after a refused
// record) against a model of the server's sequence rule, over many seeded random schedules:
// connections drop at random points (frames lost before the server read them, or acks lost
// after it stored the records) and some records are refused. The invariants: every record the
// server accepts is stored exactly once, in the order sent; every promise settles once, with
// the offset the record was stored at or with the refusal.
//
// The model is the environment (the server), not the client: the client under test is the real
// static/eddy.js. Prints one JSON summary line; exits 1 on the first violated invariant.
import { EddyClient } from "../../static/eddy.js";

const WINDOW = 1000; // sequences the server remembers per producer (storage.PRODUCER_WINDOW)
const TRIALS = JSON.parse(process.argv[2] ?? "{}").trials ?? 300;
let outOfOrder = 0; // answers that made the client renumber (or were stale), over all trials

function rng(seed) { // mulberry32: a small seeded generator, so a failure can be replayed
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The server: the log, and per producer the last sequence and the window of answers. */
class ServerModel {
  constructor() {
    this.log = []; // values, in offset order
    this.producers = new Map(); // id -> {last, answers: Map<seq, offset>}
  }

  handle(producerId, frame) {
    if (frame.headers && typeof frame.headers.h !== "string") {
      return { type: "error", id: frame.id, code: "invalid_request", message: "header values are strings" };
    }
    const state = this.producers.get(producerId) ?? { last: null, answers: new Map() };
    this.producers.set(producerId, state);
    const s = frame.sequence;
    if (state.last !== null && s <= state.last && s > state.last - WINDOW && state.answers.has(s)) {
      return { type: "ack", id: frame.id, partition: 0, offset: state.answers.get(s), timestamp: 0 };
    }
    if (state.last !== null && s !== state.last + 1) {
      outOfOrder += 1;
      return {
        type: "error", id: frame.id, code: "out_of_order_sequence", message: `expected ${state.last + 1}`,
        details: { producer_id: producerId, sequence: s, expected: state.last + 1 },
      };
    }
    const offset = this.log.length;
    this.log.push(frame.value);
    state.last = s;
    state.answers.set(s, offset);
    return { type: "ack", id: frame.id, partition: 0, offset, timestamp: 0 };
  }
}

/** Scheduler of the trial: every socket event is a step run in a random order. */
function trial(seed) {
  const random = rng(seed);
  const server = new ServerModel();
  const steps = []; // pending steps of the simulated network
  let sockets = 0;
  let live = null;

  class ModelSocket {
    constructor(url) {
      this.producerId = new URL(url).searchParams.get("producer_id");
      this.inbox = []; // frames sent, not yet read by the server
      this.outbox = []; // answers, not yet delivered
      this.closed = false;
      sockets += 1;
      live = this; // the client's current connection
      steps.push(() => this.onopen && this.onopen());
    }

    send(text) {
      if (this.closed) return;
      this.inbox.push(JSON.parse(text));
      steps.push(() => this._serve());
    }

    _serve() {
      if (this.closed || !this.inbox.length) return;
      this.outbox.push(server.handle(this.producerId, this.inbox.shift()));
      steps.push(() => this._deliver());
    }

    _deliver() {
      if (this.closed || !this.outbox.length) return;
      this.onmessage({ data: JSON.stringify(this.outbox.shift()) });
    }

    drop() { // frames not read yet and answers not delivered yet are lost
      if (this.closed) return;
      this.closed = true;
      steps.push(() => this.onclose({ code: 1006, reason: "" }));
    }

    close() {
      this.closed = true;
    }
  }

  const client = new EddyClient({ url: "http://model", WebSocket: ModelSocket, minDelayMs: 0, maxDelayMs: 0 });
  const publisher = client.publisher("t", { producerId: `p${seed}`, maxInFlight: 1 + Math.floor(random() * 8) });

  const count = 5 + Math.floor(random() * 40);
  const bad = new Set();
  const outcomes = new Array(count).fill(null);
  let settled = 0;
  for (let n = 0; n < count; n += 1) {
    const record = { value: n };
    if (random() < 0.1) {
      record.headers = { h: 1 };
      bad.add(n);
    }
    publisher.send(record).then(
      (ack) => { outcomes[n] = ack.offset; settled += 1; },
      (error) => { outcomes[n] = error.code; settled += 1; },
    );
  }

  return (async () => {
    let guard = 0;
    while (settled < count) {
      guard += 1;
      if (guard > 200000) throw new Error(`seed ${seed}: no progress (${settled}/${count} settled)`);
      if (steps.length) {
        const step = steps.splice(Math.floor(random() * steps.length), 1)[0];
        step();
      }
      if (live && !live.closed && random() < 0.03) live.drop();
      await new Promise((resolve) => setImmediate(resolve)); // timers (reconnects) and promises
    }
    publisher.close();
    const expected = [...Array(count).keys()].filter((n) => !bad.has(n));
    if (JSON.stringify(server.log) !== JSON.stringify(expected)) {
      throw new Error(`seed ${seed}: stored ${JSON.stringify(server.log)}, expected ${JSON.stringify(expected)}; ` +
        `outcomes ${JSON.stringify(outcomes)}`);
    }
    for (let n = 0; n < count; n += 1) {
      const want = bad.has(n) ? "invalid_request" : server.log.indexOf(n);
      if (outcomes[n] !== want) throw new Error(`seed ${seed}: record ${n} settled with ${outcomes[n]}, expected ${want}; bad ${[...bad]}; ${JSON.stringify(outcomes)}`);
    }
    return { records: count, refused: bad.size, connections: sockets };
  })();
}

let records = 0;
let connections = 0;
let refused = 0;
for (let seed = 1; seed <= TRIALS; seed += 1) {
  try {
    const result = await trial(seed);
    records += result.records;
    connections += result.connections;
    refused += result.refused;
  } catch (error) {
    process.stdout.write(`${JSON.stringify({ event: "failed", seed, message: error.message })}\n`);
    process.exit(1);
  }
}
process.stdout.write(`${JSON.stringify({ event: "done", trials: TRIALS, records, refused, connections, outOfOrder })}\n`);
