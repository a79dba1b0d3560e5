// A subscriber with the `ws` package and permessage-deflate, for tests/test_ws_compression.py:
// prints the negotiated Sec-WebSocket-Extensions, then each message as received (one per line),
// and closes after COUNT messages.
import WebSocket from "ws";

const [url, count] = process.argv.slice(2);
const socket = new WebSocket(url, { perMessageDeflate: true });
let received = 0;
socket.on("upgrade", (response) => {
  const extensions = response.headers["sec-websocket-extensions"] ?? null;
  process.stdout.write(JSON.stringify({ extensions }) + "\n");
});
socket.on("message", (data) => {
  process.stdout.write(data.toString() + "\n");
  received += 1;
  if (received >= Number(count)) socket.close(1000);
});
socket.on("error", (error) => {
  process.stderr.write(String(error) + "\n");
  process.exit(1);
});
