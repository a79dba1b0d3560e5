// Eddy's JavaScript client: subscribe (WebSocket, or Server-Sent Events as a fallback) and
// publish, resuming by itself after dropped connections. An ES module with no build step and no
// dependencies, served by Eddy at /static/eddy.js.
//
//   Browser:  import { EddyClient } from "/static/eddy.js";
//             const eddy = new EddyClient();                      // this page's server
//   Node 20:  import WebSocket from "ws";
//             const eddy = new EddyClient({ url: "http://127.0.0.1:8080", WebSocket });
//
// Numbers: offsets, timestamps and JSON values are JavaScript numbers, exact only up to
// 2^53 - 1 (Number.MAX_SAFE_INTEGER). Offsets and millisecond timestamps stay far below that;
// record values that need more (64-bit ids, money in minor units) should be sent as strings.
//
// The wire protocol is in /asyncapi.yaml (and the contract, ../shared/API.md).

/** Closes after which reconnecting would fail the same way: the client stops and says why. */
export const PERMANENT_CLOSE_CODES = Object.freeze([
  1002, // protocol error
  1003, // unsupported data
  1007, // invalid frame payload
  1008, // policy violation
  1009, // message too big
  1010, // extension not negotiated
  4400, // bad parameters (invalid_request, offset_out_of_range, ...)
  4401, // unauthorized (missing, invalid or expired credentials)
  4403, // forbidden
  4404, // topic not found (or deleted)
]);
// Every other close is transient (1001/1012 server restarting, 1006 connection lost, 1011,
// 1013 too many connections, 4408 too slow, 4429 rate limited, ...): reconnect and resume.

/** SSE error events after which the stream is worth reopening (resuming by offset). */
const TRANSIENT_ERROR_CODES = new Set(["slow_consumer", "unavailable", "rate_limited"]);

/**
 * An error from the server (its code, message and details) or from the connection.
 * `code` is the API's error code (`topic_not_found`, `invalid_request`, ...), or
 * `disconnected` / `closed` / `handler_error` for what the client itself reports.
 */
export class EddyError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{details?: object, closeCode?: number, status?: number, cause?: unknown}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = "EddyError";
    /** @type {string} */
    this.code = code;
    /** @type {object} */
    this.details = extra.details ?? {};
    /** @type {number | undefined} the WebSocket close code, when a close ended it */
    this.closeCode = extra.closeCode;
    /** @type {number | undefined} the HTTP status, when an HTTP answer said it */
    this.status = extra.status;
  }
}

/**
 * Full-jitter exponential backoff: a random delay in [0, min(maxMs, minMs * 2^attempt)).
 * Spreading reconnects over the whole window keeps a herd of clients from returning at once.
 * @param {number} attempt 0 for the first retry
 * @param {number} minMs
 * @param {number} maxMs
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt, minMs, maxMs, random = Math.random) {
  const cap = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/**
 * @typedef {Object} ClientOptions
 * @property {string} [url] the server, `http(s)://host:port` (or `ws(s)://`); default: this page's origin
 * @property {string} [token] API key or JWT, sent as `?token=` (browsers cannot set headers on a WebSocket)
 * @property {any} [WebSocket] a WebSocket class (Node: the `ws` package); default: globalThis.WebSocket
 * @property {any} [EventSource] an EventSource class; default: globalThis.EventSource
 * @property {typeof fetch} [fetch] default: globalThis.fetch (reads SSE errors)
 * @property {number} [minDelayMs] first reconnect window (default 250 ms)
 * @property {number} [maxDelayMs] largest reconnect window (default 30 s)
 * @property {number} [openTimeoutMs] give up on a connection that does not open (default 10 s)
 */

/**
 * @typedef {Object} EddyRecord
 * @property {string} topic
 * @property {number} partition
 * @property {number} offset
 * @property {number} timestamp ms since the epoch
 * @property {string | null} key
 * @property {any} [value] the JSON value (absent for binary records)
 * @property {string} [value_base64] binary records
 * @property {Record<string, string>} headers the last value of each header name
 * @property {Array<[string, string | null]>} [header_list] every header in order, present only when a
 *   name repeats or a value is null (or not UTF-8), as Kafka producers may send them
 * @property {number} [conflated] how many older records of this key were dropped before it
 */

/**
 * @typedef {Object} SubscribeOptions
 * @property {"earliest" | "latest"} [from] where partitions without another position start
 * @property {Record<string, number> | Map<number, number>} [offsets] next offset per partition to start at
 * @property {number[]} [partitions] only these partitions
 * @property {string[]} [keys] only records with these keys
 * @property {string} [group] consumer-group mode
 * @property {boolean} [auto_commit] group mode: the server commits what it sent
 * @property {number | Date} [since] partitions without a position start at this time (ms)
 * @property {"close" | "conflate"} [on_slow] what the server does when this subscriber falls behind
 * @property {number} [max_rate] at most this many record frames per second (conflated per key)
 * @property {"websocket" | "sse" | "auto"} [transport] `auto`: WebSocket, falling back to
 *   Server-Sent Events when WebSockets cannot connect (default: `websocket`, or `sse` when there
 *   is no WebSocket class)
 * @property {number} [fallbackAfter] `auto`: failed WebSocket attempts before SSE (default 2)
 * @property {(record: EddyRecord) => (void | Promise<void>)} [onRecord] called for each record,
 *   one at a time, in order (a returned promise is awaited before the next record)
 */

/**
 * @typedef {Object} Ack
 * @property {number} partition
 * @property {number} offset
 * @property {number} timestamp
 */

/**
 * @typedef {Object} PublisherOptions
 * @property {string} [producerId] idempotent producer: this id, with a sequence per record
 * @property {boolean} [idempotent] idempotent producer with a random id
 * @property {number} [sequence] first sequence to use (default 0; continue a producer id's numbering)
 * @property {number} [maxInFlight] records sent and not yet answered (default 1000: the server
 *   remembers that many sequences, so every resend after a reconnect gets its original ack)
 */

/** A tiny event emitter (EventTarget's events cannot carry plain values in every runtime). */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * Listen to an event; returns a function that stops listening.
   * @param {string} type
   * @param {(value: any) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return () => this._listeners.get(type)?.delete(listener);
  }

  /** @param {string} type @param {any} value */
  _emit(type, value) {
    for (const listener of [...(this._listeners.get(type) ?? [])]) {
      try {
        listener(value);
      } catch (err) {
        // A listener's bug must not break the connection's bookkeeping.
        setTimeout(() => { throw err; }, 0);
      }
    }
  }
}

/** @param {any} offsets @returns {Map<number, number>} */
function toOffsetMap(offsets) {
  const map = new Map();
  if (!offsets) return map;
  const entries = offsets instanceof Map ? offsets.entries() : Object.entries(offsets);
  for (const [p, o] of entries) map.set(Number(p), Number(o));
  return map;
}

/** @param {Map<number, number>} map */
function offsetsParam(map) {
  return [...map.entries()].sort((a, b) => a[0] - b[0]).map(([p, o]) => `${p}:${o}`).join(",");
}

/** @param {string | ArrayBuffer | Uint8Array} data */
function frameText(data) {
  if (typeof data === "string") return data;
  return new TextDecoder().decode(data);
}

/** The client: one server, its credentials and runtime. */
export class EddyClient {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    const origin = globalThis.location ? globalThis.location.origin : undefined;
    const url = options.url ?? origin;
    if (!url) throw new TypeError("EddyClient needs {url} outside a browser page");
    const base = url.replace(/\/+$/, "");
    this.httpUrl = base.replace(/^ws(s?):/, "http$1:");
    this.wsUrl = base.replace(/^http(s?):/, "ws$1:");
    this.token = options.token;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    this.fetch = options.fetch ?? (globalThis.fetch ? globalThis.fetch.bind(globalThis) : undefined);
    this.minDelayMs = options.minDelayMs ?? 250;
    this.maxDelayMs = options.maxDelayMs ?? 30000;
    this.openTimeoutMs = options.openTimeoutMs ?? 10000;
  }

  /**
   * Follow a topic. Records arrive through `onRecord` (or `on("record")`); the subscription
   * reconnects after transient closes and resumes exactly after the last record it delivered
   * (in group mode: at the group's committed offsets). It stops on permanent errors and
   * emits `error` with the server's code and message.
   * @param {string} topic
   * @param {SubscribeOptions} [options]
   * @returns {Subscription}
   */
  subscribe(topic, options = {}) {
    return new Subscription(this, topic, options);
  }

  /**
   * A publishing connection: `send(record)` resolves with the record's ack.
   * @param {string} topic
   * @param {PublisherOptions} [options]
   * @returns {Publisher}
   */
  publisher(topic, options = {}) {
    return new Publisher(this, topic, options);
  }

  /** @param {string} topic @param {string} path @param {URLSearchParams} params */
  _url(base, topic, path, params) {
    if (this.token) params.set("token", this.token);
    const query = params.toString();
    return `${base}/v1/topics/${encodeURIComponent(topic)}/${path}${query ? `?${query}` : ""}`;
  }

  /**
   * Open a WebSocket and wire its events; `handlers.close` runs once, however it ends
   * (also for an open timeout: code 1006).
   * @returns {{socket: any, close: (code?: number, reason?: string) => void}}
   */
  _openSocket(url, handlers) {
    let ended = false;
    let timer = null;
    const socket = new this.WebSocket(url);
    const finish = (code, reason) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      handlers.close(code, reason);
    };
    timer = setTimeout(() => {
      finish(1006, "connection did not open in time");
      try { socket.close(); } catch (_) { /* not open yet */ }
    }, this.openTimeoutMs);
    socket.onopen = () => {
      clearTimeout(timer);
      if (!ended && handlers.open) handlers.open();
    };
    socket.onmessage = (event) => {
      if (ended) return;
      let frame;
      try {
        frame = JSON.parse(frameText(event.data));
      } catch (_) {
        return; // not JSON: not ours to understand
      }
      handlers.message(frame);
    };
    socket.onerror = () => {}; // a close event follows with the code
    socket.onclose = (event) => finish(event.code, event.reason || "");
    return {
      socket,
      close(code = 1000, reason = "") {
        ended = true;
        clearTimeout(timer);
        try { socket.close(code, reason); } catch (_) { /* already closing */ }
      },
    };
  }
}

/** Transient problems grow the delay; a connection that delivered something resets it. */
class Reconnector {
  constructor(client) {
    this.client = client;
    this.attempts = 0;
    this.timer = null;
  }

  /** Schedule `fn` after the next backoff delay; returns the delay. */
  schedule(fn) {
    const delay = backoffDelay(this.attempts, this.client.minDelayMs, this.client.maxDelayMs);
    this.attempts += 1;
    this.timer = setTimeout(fn, delay);
    return delay;
  }

  reset() {
    this.attempts = 0;
  }

  cancel() {
    clearTimeout(this.timer);
    this.timer = null;
  }
}

/**
 * A subscription. Events (`on(type, fn)`):
 * - `subscribed` (the server's first frame: positions per partition, `reset` flags)
 * - `assignment` (group mode: the partitions this member owns, after every rebalance)
 * - `record` (each record, in order, after `onRecord`)
 * - `disconnect` ({code, reason, delayMs}: a transient close; reconnecting after delayMs)
 * - `error` (EddyError: a permanent error; the subscription has stopped)
 * - `state` ("connecting" | "live" | "reconnecting" | "stopped" | "failed")
 * - `transport` ("websocket" | "sse": the transport in use, when it changes)
 */
export class Subscription extends Emitter {
  /** @param {EddyClient} client @param {string} topic @param {SubscribeOptions} options */
  constructor(client, topic, options) {
    super();
    this.client = client;
    this.topic = topic;
    this.options = { ...options };
    this.group = options.group ?? null;
    /** @type {Map<number, number>} next offset to deliver, per partition (not group mode) */
    this._next = toOffsetMap(options.offsets);
    /** @type {Map<number, number>} group mode: next offset after the records handled */
    this._handled = new Map();
    /** @type {Map<number, number>} group mode: what the group has committed, as far as known */
    this._committed = new Map();
    /** @type {Set<number>} group mode: partitions this member owns */
    this._assigned = new Set();
    this._queue = [];
    this._draining = false;
    this._pendingCommits = [];
    this._connection = null;
    this._generation = 0; // one per connection: records of an old one are not handled twice
    this._lastError = null;
    this._reconnect = new Reconnector(client);
    this._stopped = false;
    this._wsFailures = 0; // WebSocket attempts in a row that never opened (auto transport)
    /** @type {"websocket" | "sse"} */
    this.transport = this._initialTransport();
    /** @type {string} */
    this.state = "connecting";
    /** Resolves when the subscription stops: null after `close()`, else the EddyError. */
    this.closed = new Promise((resolve) => { this._resolveClosed = resolve; });
    if (this.group !== null && this.transport === "sse") {
      throw new EddyError("invalid_request", "consumer groups need a WebSocket (SSE has no group mode)");
    }
    queueMicrotask(() => this._connect()); // listeners attached right after subscribe() see everything
  }

  _initialTransport() {
    const wanted = this.options.transport ?? "websocket";
    if (wanted === "sse") return "sse";
    if (!this.client.WebSocket) {
      if (this.client.EventSource && wanted === "auto") return "sse";
      throw new TypeError("no WebSocket implementation: pass {WebSocket} (Node: the ws package)");
    }
    return "websocket";
  }

  /** Next offset per partition: where a reconnect resumes (not group mode). */
  positions() {
    return Object.fromEntries([...this._next.entries()].sort((a, b) => a[0] - b[0]));
  }

  /** Group mode: the partitions this member owns now. */
  assignedPartitions() {
    return [...this._assigned].sort((a, b) => a - b);
  }

  /** Stop for good (no reconnect). */
  close() {
    if (this._stopped) return;
    this._finish("stopped", null);
  }

  /**
   * Group mode: commit what `onRecord` has finished with (the next offset per partition owned
   * now), or the given offsets. Resolves with the committed offsets once they are on disk;
   * rejects with the server's error (e.g. `not_assigned`) or `disconnected`.
   * @param {Record<string, number>} [offsets]
   * @returns {Promise<Record<string, number>>}
   */
  commit(offsets) {
    if (this.group === null) {
      return Promise.reject(new EddyError("invalid_request", "commit() needs group mode"));
    }
    const connection = this._connection;
    if (!connection || this._stopped || this.state !== "live") {
      return Promise.reject(new EddyError("disconnected", "not connected: nothing committed"));
    }
    let wanted = offsets ? toOffsetMap(offsets) : null;
    if (wanted === null) {
      wanted = new Map();
      for (const p of this._assigned) {
        const handled = this._handled.get(p);
        if (handled !== undefined && handled !== this._committed.get(p)) wanted.set(p, handled);
      }
    }
    if (wanted.size === 0) return Promise.resolve({});
    const body = Object.fromEntries([...wanted.entries()].map(([p, o]) => [String(p), o]));
    return new Promise((resolve, reject) => {
      this._pendingCommits.push({ resolve, reject, offsets: wanted });
      connection.socket.send(JSON.stringify({ type: "commit", offsets: body }));
    });
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  _params() {
    const o = this.options;
    const params = new URLSearchParams();
    if (o.from) params.set("from", o.from);
    if (this.group === null) {
      if (this._next.size) params.set("offsets", offsetsParam(this._next));
      if (o.partitions && o.partitions.length) params.set("partitions", o.partitions.join(","));
    } else {
      params.set("group", this.group);
      if (o.auto_commit) params.set("auto_commit", "true");
    }
    if (o.keys && o.keys.length) params.set("keys", o.keys.join(","));
    if (o.since !== undefined && o.since !== null) {
      params.set("since", String(o.since instanceof Date ? o.since.getTime() : o.since));
    }
    if (o.on_slow) params.set("on_slow", o.on_slow);
    if (o.max_rate !== undefined && o.max_rate !== null) params.set("max_rate", String(o.max_rate));
    return params;
  }

  _connect() {
    if (this._stopped) return;
    this._lastError = null;
    this._generation += 1;
    this._setState(this._reconnect.attempts ? "reconnecting" : "connecting");
    if (this.transport === "sse") this._connectSse();
    else this._connectWebSocket();
  }

  // --- WebSocket ------------------------------------------------------------------------------

  _connectWebSocket() {
    const url = this.client._url(this.client.wsUrl, this.topic, "ws", this._params());
    const generation = this._generation;
    let opened = false;
    try {
      this._connection = this.client._openSocket(url, {
        open: () => { opened = true; this._wsFailures = 0; },
        message: (frame) => this._onFrame(frame, generation),
        close: (code, reason) => {
          if (!opened) this._wsFailures += 1;
          this._onClose(code, reason, generation);
        },
      });
    } catch (err) {
      this._finish("failed", new EddyError("invalid_request", `cannot open ${url}: ${err.message}`, { cause: err }));
    }
  }

  _onFrame(frame, generation) {
    if (generation !== this._generation || this._stopped) return;
    switch (frame && frame.type) {
      case "subscribed":
        this._reconnect.reset();
        for (const [p, info] of Object.entries(frame.partitions ?? {})) {
          if (info && typeof info.offset === "number") this._next.set(Number(p), info.offset);
        }
        this._setState("live");
        this._emit("subscribed", frame);
        break;
      case "assignment":
        this._reconnect.reset();
        this._onAssignment(frame);
        this._setState("live");
        this._emit("assignment", frame);
        break;
      case "record":
        this._onRecordFrame(frame, generation);
        break;
      case "committed": {
        const pending = this._pendingCommits.shift();
        const offsets = toOffsetMap(frame.offsets);
        for (const [p, o] of offsets) this._committed.set(p, o);
        if (pending) pending.resolve(frame.offsets ?? {});
        break;
      }
      case "error": {
        this._lastError = frame;
        // In group mode the server answers commits in order; an error then is a commit's.
        const pending = this._pendingCommits.shift();
        if (pending) pending.reject(this._errorOf(frame));
        break;
      }
      default:
        break;
    }
  }

  _onAssignment(frame) {
    const owned = new Set(Object.keys(frame.partitions ?? {}).map(Number));
    for (const p of [...this._assigned]) {
      if (!owned.has(p)) {
        this._assigned.delete(p);
        this._handled.delete(p);
        this._committed.delete(p);
      }
    }
    for (const [p, info] of Object.entries(frame.partitions ?? {})) {
      const partition = Number(p);
      if (!this._assigned.has(partition)) {
        this._assigned.add(partition);
        // Where the member starts is the group's committed offset (or `from`): nothing to commit yet.
        this._handled.set(partition, info.offset);
        this._committed.set(partition, info.offset);
      }
    }
    // Revoked partitions' records not handled yet belong to their new owner now.
    this._queue = this._queue.filter((item) => this._assigned.has(item.record.partition));
  }

  _onRecordFrame(record, generation) {
    const partition = record.partition;
    if (this.group === null) {
      const next = this._next.get(partition);
      if (next !== undefined && record.offset < next) return; // seen already (an SSE replay)
      this._next.set(partition, record.offset + 1);
    } else if (!this._assigned.has(partition)) {
      return; // revoked meanwhile
    }
    this._queue.push({ record, generation });
    if (!this._draining) this._drain();
  }

  /** Hand records to `onRecord` one at a time; synchronous handlers run without delay. */
  async _drain() {
    this._draining = true;
    try {
      while (this._queue.length && !this._stopped) {
        const { record, generation } = this._queue.shift();
        if (this.group !== null && generation !== this._generation) continue; // redelivered later
        try {
          const result = this.options.onRecord ? this.options.onRecord(record) : undefined;
          if (result && typeof result.then === "function") await result;
        } catch (err) {
          this._finish("failed", new EddyError("handler_error",
            `onRecord failed at ${record.partition}:${record.offset}: ${err && err.message}`, { cause: err }));
          return;
        }
        if (this._stopped) return;
        if (this.group !== null && generation === this._generation) {
          this._handled.set(record.partition, record.offset + 1); // what commit() commits
        }
        this._emit("record", record);
      }
    } finally {
      this._draining = false;
    }
  }

  _errorOf(frame, closeCode) {
    return new EddyError(String(frame.code ?? "error"), String(frame.message ?? ""),
      { details: frame.details ?? {}, closeCode });
  }

  _onClose(code, reason, generation) {
    if (generation !== this._generation || this._stopped) return;
    this._connection = null;
    for (const pending of this._pendingCommits.splice(0)) {
      pending.reject(new EddyError("disconnected", "the connection dropped before the commit was answered"));
    }
    if (this.group !== null) {
      // The group's committed offsets are the resume point: what was delivered and not
      // committed comes again (at-least-once), so nothing of this connection is handled later.
      this._queue = [];
      this._assigned.clear();
      this._handled.clear();
      this._committed.clear();
    }
    if (PERMANENT_CLOSE_CODES.includes(code)) {
      const error = this._lastError
        ? this._errorOf(this._lastError, code)
        : new EddyError(`close_${code}`, reason || `closed with ${code}`, { closeCode: code });
      this._finish("failed", error);
      return;
    }
    if (this.options.transport === "auto" && this.group === null && this.client.EventSource &&
        this._wsFailures >= (this.options.fallbackAfter ?? 2)) {
      this.transport = "sse"; // WebSockets do not get through (a proxy): Server-Sent Events do
      this._emit("transport", "sse");
    }
    this._retry(code, reason);
  }

  _retry(code, reason) {
    this._setState("reconnecting");
    const delayMs = this._reconnect.schedule(() => this._connect());
    this._emit("disconnect", { code, reason, delayMs });
  }

  _finish(state, error) {
    this._stopped = true;
    this._reconnect.cancel();
    const connection = this._connection;
    this._connection = null;
    if (connection) connection.close(1000, "closed by the client");
    for (const pending of this._pendingCommits.splice(0)) {
      pending.reject(error ?? new EddyError("closed", "the subscription was closed"));
    }
    this._queue = [];
    this._setState(state);
    if (error) this._emit("error", error);
    this._resolveClosed(error);
  }

  // --- Server-Sent Events ---------------------------------------------------------------------

  _connectSse() {
    const ES = this.client.EventSource;
    if (!ES) {
      this._finish("failed", new EddyError("invalid_request", "no EventSource implementation: pass {EventSource}"));
      return;
    }
    const params = this._params();
    const url = this.client._url(this.client.httpUrl, this.topic, "events", params);
    const generation = this._generation;
    const source = new ES(url);
    this._connection = { close: () => source.close(), socket: null };
    const data = (event) => {
      if (generation !== this._generation) return null;
      try {
        return JSON.parse(event.data);
      } catch (_) {
        return null;
      }
    };
    source.addEventListener("subscribed", (event) => {
      const frame = data(event);
      if (frame) this._onFrame({ type: "subscribed", ...frame }, generation);
    });
    source.addEventListener("record", (event) => {
      const frame = data(event);
      if (frame) this._onFrame({ type: "record", ...frame }, generation);
    });
    source.addEventListener("open", () => {
      if (generation === this._generation && this.state === "reconnecting") this._setState("connecting");
    });
    source.addEventListener("error", (event) => {
      if (generation !== this._generation || this._stopped) return;
      if (typeof event.data === "string") { // the server's `event: error`; the stream ends
        source.close();
        const frame = data(event) ?? { code: "error", message: event.data };
        const error = this._errorOf(frame);
        this._connection = null;
        if (TRANSIENT_ERROR_CODES.has(error.code)) this._retry(0, error.message);
        else this._finish("failed", error);
        return;
      }
      if (source.readyState === 2) { // CLOSED: not a 200 event stream; read why over fetch
        source.close();
        this._connection = null;
        this._probeSse(url, generation);
        return;
      }
      // CONNECTING: the EventSource reconnects by itself, resuming with Last-Event-ID.
      this._setState("reconnecting");
      this._emit("disconnect", { code: 0, reason: "event stream interrupted", delayMs: 0 });
    });
  }

  /** Why an event stream was refused: the API's JSON error, or a transient failure. */
  async _probeSse(url, generation) {
    let error = null;
    if (this.client.fetch) {
      const controller = new AbortController();
      try {
        const response = await this.client.fetch(url, {
          headers: { Accept: "text/event-stream" },
          signal: controller.signal,
        });
        if (!response.ok && response.status < 500 && response.status !== 429) {
          let body = null;
          try { body = await response.json(); } catch (_) { body = null; }
          const e = body && body.error ? body.error : { code: `http_${response.status}`, message: response.statusText };
          error = new EddyError(String(e.code), String(e.message ?? ""), { details: e.details ?? {}, status: response.status });
        }
      } catch (_) {
        error = null; // unreachable: transient
      } finally {
        controller.abort();
      }
    }
    if (generation !== this._generation || this._stopped) return;
    if (error) this._finish("failed", error);
    else this._retry(0, "event stream refused");
  }
}

/**
 * A publishing connection. `send(record)` returns a promise of the record's ack, or rejects
 * with the server's error for that record. With `producerId` (or `idempotent: true`) every
 * record carries a sequence; after a reconnect the records not yet acknowledged are sent again
 * in order and the server, which dedupes by sequence, answers a stored one with its original
 * ack: each promise settles once and no record is stored twice. Without it a record in flight
 * when the connection drops is rejected with `disconnected` (it may or may not be stored).
 *
 * Events: `error` (a permanent error; the publisher has stopped), `disconnect`, `state`.
 */
export class Publisher extends Emitter {
  /** @param {EddyClient} client @param {string} topic @param {PublisherOptions} options */
  constructor(client, topic, options) {
    super();
    if (!client.WebSocket) throw new TypeError("no WebSocket implementation: pass {WebSocket}");
    this.client = client;
    this.topic = topic;
    this.producerId = options.producerId ??
      (options.idempotent ? `js-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}` : null);
    /** The sequence the next new record gets (idempotent producer). */
    this.nextSequence = options.sequence ?? 0;
    this.maxInFlight = options.maxInFlight ?? 1000;
    this._entries = []; // unanswered records, oldest first: {id, record, sequence, resolve, reject}
    this._wire = []; // what this connection sent and is waiting answers for: {entry, sequence}
    this._sent = 0; // entries[0.._sent) were sent on this connection
    this._resyncing = false;
    this._nextId = 1;
    this._connection = null;
    this._open = false;
    this._generation = 0;
    this._lastError = null;
    this._openedAt = 0;
    this._reconnect = new Reconnector(client);
    this._stopped = false;
    this.state = "connecting";
    this.closed = new Promise((resolve) => { this._resolveClosed = resolve; });
    this._connect();
  }

  /**
   * Publish one record (`{key, value, headers, partition, timestamp}` or `value_base64`).
   * @param {object} record
   * @returns {Promise<Ack>}
   */
  send(record) {
    if (this._stopped) {
      return Promise.reject(this._stopError ?? new EddyError("closed", "the publisher is closed"));
    }
    const { id: _id, sequence: _sequence, ...fields } = record;
    const entry = {
      id: this._nextId++, record: fields, sequence: null, renumbered: 0, resolve: null, reject: null, promise: null,
    };
    entry.promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    if (this.producerId !== null) entry.sequence = this.nextSequence++;
    this._entries.push(entry);
    this._pump();
    return entry.promise;
  }

  /** Records sent or queued and not yet answered. */
  get pending() {
    return this._entries.length;
  }

  /** Resolves once every record sent so far is answered (acked or rejected). */
  async flush() {
    await Promise.allSettled(this._entries.map((e) => e.promise));
  }

  /** Stop: records not yet answered are rejected with `closed`. */
  close() {
    if (!this._stopped) this._finish("stopped", null);
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  _connect() {
    if (this._stopped) return;
    this._generation += 1;
    const generation = this._generation;
    this._lastError = null;
    this._open = false;
    this._wire = [];
    this._sent = 0;
    this._resyncing = false;
    const params = new URLSearchParams();
    if (this.producerId !== null) params.set("producer_id", this.producerId);
    const url = this.client._url(this.client.wsUrl, this.topic, "publish", params);
    this._setState(this._reconnect.attempts ? "reconnecting" : "connecting");
    try {
      this._connection = this.client._openSocket(url, {
        open: () => {
          if (generation !== this._generation) return;
          this._open = true;
          this._openedAt = Date.now();
          this._setState("live");
          this._pump();
        },
        message: (frame) => this._onFrame(frame, generation),
        close: (code, reason) => this._onClose(code, reason, generation),
      });
    } catch (err) {
      this._finish("failed", new EddyError("invalid_request", `cannot open ${url}: ${err.message}`, { cause: err }));
    }
  }

  /** Send what the window allows, in order. */
  _pump() {
    if (!this._open || this._resyncing || !this._connection) return;
    const socket = this._connection.socket;
    while (this._sent < this._entries.length && this._wire.length < this.maxInFlight) {
      const entry = this._entries[this._sent];
      const frame = { ...entry.record, id: entry.id };
      if (entry.sequence !== null) frame.sequence = entry.sequence;
      socket.send(JSON.stringify(frame));
      this._wire.push({ entry, sequence: entry.sequence });
      this._sent += 1;
    }
  }

  _onFrame(frame, generation) {
    if (generation !== this._generation || this._stopped || !frame) return;
    if (frame.type === "error" && !("id" in frame)) {
      this._lastError = frame; // about the connection: its close follows
      return;
    }
    if (frame.type !== "ack" && frame.type !== "error") return;
    const sent = this._wire.shift(); // answers come in the order the records were sent
    if (!sent) return;
    const { entry } = sent;
    const stale = sent.sequence !== entry.sequence; // renumbered since it was sent
    if (frame.type === "ack") {
      this._reconnect.reset();
      this._remove(entry);
      entry.resolve({ partition: frame.partition, offset: frame.offset, timestamp: frame.timestamp });
    } else if (frame.code === "out_of_order_sequence" && entry.sequence !== null) {
      // A refused record does not use up its sequence, so the records sent after it skip
      // one: the server says which sequence it expects, and they are renumbered from there
      // and sent again (stale sends of renumbered records are answered so too: ignored).
      const expected = frame.details ? frame.details.expected : undefined;
      if (!stale && Number.isSafeInteger(expected) && entry.renumbered < 3) {
        this._renumberFrom(entry, expected);
      } else if (!stale) {
        this._remove(entry);
        entry.reject(this._refusal(frame));
      }
    } else {
      this._remove(entry);
      entry.reject(this._refusal(frame));
    }
    if (this._resyncing && this._wire.length === 0) {
      // Every send made before the renumbering is answered (none was stored): send again.
      this._resyncing = false;
      this._sent = 0;
    }
    this._pump();
  }

  _refusal(frame) {
    return new EddyError(String(frame.code ?? "error"), String(frame.message ?? ""),
      { details: frame.details ?? {} });
  }

  _remove(entry) {
    const index = this._entries.indexOf(entry);
    if (index >= 0) {
      this._entries.splice(index, 1);
      if (index < this._sent) this._sent -= 1;
    }
  }

  /** Number `entry` and every record after it from `expected` on. Nothing more is sent until
   * what is on the wire is answered (it was sent with the old numbers); then all of them are
   * sent again, in order. */
  _renumberFrom(entry, expected) {
    const delta = expected - entry.sequence;
    for (const later of this._entries.slice(this._entries.indexOf(entry))) later.sequence += delta;
    this.nextSequence += delta;
    entry.renumbered += 1;
    this._resyncing = true;
  }

  _onClose(code, reason, generation) {
    if (generation !== this._generation || this._stopped) return;
    this._connection = null;
    this._open = false;
    if (PERMANENT_CLOSE_CODES.includes(code)) {
      const frame = this._lastError;
      const error = frame
        ? new EddyError(String(frame.code ?? "error"), String(frame.message ?? ""), { details: frame.details ?? {}, closeCode: code })
        : new EddyError(`close_${code}`, reason || `closed with ${code}`, { closeCode: code });
      this._finish("failed", error);
      return;
    }
    if (this.producerId === null) {
      // Sent but unanswered: it may or may not be stored, and resending could store it twice.
      for (const { entry } of this._wire) {
        this._remove(entry);
        entry.reject(new EddyError("disconnected",
          "the connection dropped before the ack: the record may or may not be stored " +
          "(use an idempotent publisher to resend safely)", { closeCode: code }));
      }
    }
    this._wire = [];
    this._sent = 0;
    if (this._openedAt && Date.now() - this._openedAt > 10000) this._reconnect.reset();
    this._setState("reconnecting");
    const delayMs = this._reconnect.schedule(() => this._connect());
    this._emit("disconnect", { code, reason, delayMs });
  }

  _finish(state, error) {
    this._stopped = true;
    this._stopError = error;
    this._reconnect.cancel();
    const connection = this._connection;
    this._connection = null;
    if (connection) connection.close(1000, "closed by the client");
    const reason = error ?? new EddyError("closed", "the publisher was closed before the ack");
    for (const entry of this._entries.splice(0)) entry.reject(reason);
    this._wire = [];
    this._setState(state);
    if (error) this._emit("error", error);
    this._resolveClosed(error);
  }
}
