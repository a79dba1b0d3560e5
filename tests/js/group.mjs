// A consumer-group member: handles records with an async handler, commits after every
// args.commitEvery records and once more at the end; exits after args.count records.
import { args, client, errorEvent, out } from "./common.mjs";

const eddy = client();
let seen = 0;
let finishing = null;
const subscription = eddy.subscribe(args.topic, {
  group: args.group,
  from: "earliest",
  async onRecord(record) {
    await new Promise((resolve) => setTimeout(resolve, 1)); // "work"
    seen += 1;
    out({ event: "record", partition: record.partition, offset: record.offset, value: record.value });
  },
});
subscription.on("assignment", (frame) => out({ event: "assignment", partitions: frame.partitions }));
subscription.on("record", async () => {
  // After onRecord finished with it: commit() covers this record.
  if (seen % args.commitEvery === 0 || seen === args.count) {
    const last = seen === args.count;
    const done = subscription.commit().then(
      (offsets) => out({ event: "committed", offsets }),
      (error) => out({ event: "commit_failed", code: error.code, message: error.message }),
    );
    if (last) finishing = done.then(() => subscription.close());
  }
});
const error = await subscription.closed;
if (error) {
  out(errorEvent(error));
  process.exit(1);
}
await finishing;
out({ event: "done" });
