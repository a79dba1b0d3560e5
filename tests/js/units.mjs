// Pure parts of eddy.js, without a server: the backoff's bounds, and the URL a subscription
// opens for every parameter (first connection and after a reconnect). A WebSocket class that
// records its URL and never connects stands in for the network. Prints one JSON line per check.
import { EddyClient, PERMANENT_CLOSE_CODES, backoffDelay } from "../../static/eddy.js";

const results = [];
const check = (name, ok, detail) => results.push({ event: "check", name, ok: Boolean(ok), detail });

// Full jitter: [0, min(max, min * 2^attempt)), whatever the random source returns in [0, 1).
let bounded = true;
for (let attempt = 0; attempt < 40; attempt += 1) {
  for (const r of [0, 0.5, 0.999999]) {
    const delay = backoffDelay(attempt, 250, 30000, () => r);
    const cap = Math.min(30000, 250 * 2 ** attempt);
    if (!(delay >= 0 && delay < cap)) bounded = false;
  }
}
check("backoff within [0, cap)", bounded);
check("backoff grows", backoffDelay(0, 250, 30000, () => 0.999) < 250 &&
  backoffDelay(3, 250, 30000, () => 0.999) >= 1000 && backoffDelay(20, 250, 30000, () => 0.999) < 30000);
check("permanent codes", [4400, 4401, 4403, 4404].every((c) => PERMANENT_CLOSE_CODES.includes(c)) &&
  ![1001, 1006, 1011, 1012, 1013, 4408].some((c) => PERMANENT_CLOSE_CODES.includes(c)));

const urls = [];
class Recorder {
  constructor(url) {
    urls.push(url);
    this.url = url;
    queueMicrotask(() => this.onopen());
  }
  send() {}
  close() {}
}
const client = new EddyClient({ url: "https://eddy.example.com/", token: "t 1", WebSocket: Recorder, minDelayMs: 0, maxDelayMs: 0 });
const all = client.subscribe("prices.v1", {
  from: "earliest", offsets: { 0: 15, 2: 20 }, partitions: [0, 2], keys: ["AAPL", "MSFT"],
  since: new Date(1764000000000), on_slow: "conflate", max_rate: 5,
});
const group = client.subscribe("orders", { group: "mailer", auto_commit: true, from: "earliest", since: 17 });
await new Promise((resolve) => setTimeout(resolve, 0));
const query = (url) => Object.fromEntries(new URL(url).searchParams);
check("wss and path", urls[0].startsWith("wss://eddy.example.com/v1/topics/prices.v1/ws?"), urls[0]);
check("every parameter", JSON.stringify(query(urls[0])) === JSON.stringify({
  from: "earliest", offsets: "0:15,2:20", partitions: "0,2", keys: "AAPL,MSFT", since: "1764000000000",
  on_slow: "conflate", max_rate: "5", token: "t 1",
}), query(urls[0]));
check("group parameters", JSON.stringify(query(urls[1])) === JSON.stringify({
  from: "earliest", group: "mailer", auto_commit: "true", since: "17", token: "t 1",
}), query(urls[1]));

// The first frame and some records move the resume point; a transient close reconnects there.
const live = { message: (frame) => all._connection.socket.onmessage({ data: JSON.stringify(frame) }) };
live.message({ type: "subscribed", partitions: { 0: { offset: 15 }, 2: { offset: 3, reset: true } } });
live.message({ type: "record", partition: 2, offset: 3, key: "AAPL", value: 1, headers: {} });
live.message({ type: "record", partition: 2, offset: 4, key: "AAPL", value: 2, headers: {} });
live.message({ type: "record", partition: 2, offset: 4, key: "AAPL", value: 2, headers: {} }); // repeated
check("positions", JSON.stringify(all.positions()) === JSON.stringify({ 0: 15, 2: 5 }), all.positions());
all._connection.socket.onclose({ code: 1012, reason: "restarting" });
await new Promise((resolve) => setTimeout(resolve, 5));
check("resume by offsets", query(urls[2]).offsets === "0:15,2:5" && query(urls[2]).since === "1764000000000", urls[2]);
check("no offsets in group mode", !("offsets" in query(urls[1])));

// A permanent close stops it with the message of the error frame before it.
all._connection.socket.onmessage({ data: JSON.stringify({ type: "error", code: "forbidden", message: "no read on prices.v1" }) });
all._connection.socket.onclose({ code: 4403, reason: "no read" });
const error = await all.closed;
check("permanent error", error.code === "forbidden" && error.message === "no read on prices.v1" && error.closeCode === 4403, error);
await new Promise((resolve) => setTimeout(resolve, 5));
check("no reconnect after a permanent close", urls.filter((u) => u.includes("prices.v1")).length === 2, urls.length);
group.close();
check("closed by the caller", (await group.closed) === null);
for (const result of results) process.stdout.write(`${JSON.stringify(result)}\n`);
