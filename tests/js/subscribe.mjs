// Subscribe with the options in args.options; print every record and every event; exit 0 after
// args.count records, 1 when the subscription stops with an error.
import { args, client, errorEvent, out } from "./common.mjs";

const eddy = client();
let seen = 0;
const subscription = eddy.subscribe(args.topic, {
  ...args.options,
  onRecord(record) {
    seen += 1;
    out({ event: "record", partition: record.partition, offset: record.offset, key: record.key, value: record.value });
    if (seen === args.count) subscription.close();
  },
});
subscription.on("subscribed", (frame) => out({ event: "subscribed", partitions: frame.partitions }));
subscription.on("disconnect", (info) => out({ event: "disconnect", code: info.code, delayMs: info.delayMs }));
subscription.on("state", (state) => out({ event: "state", state }));
const error = await subscription.closed;
if (error) {
  out(errorEvent(error));
  process.exit(1);
}
out({ event: "done", positions: subscription.positions() });
