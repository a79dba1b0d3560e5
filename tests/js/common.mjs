// Shared by the Node test scripts: the client under test, its WebSocket implementation (the
// ws package from the root package.json) and one JSON line per event on stdout, which the
// pytest side (tests/test_js_client_node.py) reads and asserts on.
import WebSocket from "ws";
import { EddyClient } from "../../static/eddy.js";

/** The script's arguments: one JSON object (argv[2]). */
export const args = JSON.parse(process.argv[2] ?? "{}");

export function out(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

export function client(extra = {}) {
  // Short reconnect windows keep the tests quick; the backoff is the real one.
  return new EddyClient({ url: args.url, WebSocket, minDelayMs: 100, maxDelayMs: 1000, ...extra });
}

export function errorEvent(error) {
  return { event: "error", code: error.code, message: error.message, closeCode: error.closeCode ?? null };
}
