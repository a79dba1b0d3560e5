// Publish args.count records {key, value: n} in waves of args.wave (every record of a wave in
// flight at once), idempotently when args.idempotent; record args.badAt (if any) has a header
// that is not a string, which the server refuses. Prints every ack and refusal; exits when
// every record is answered (1 if the publisher stopped with an error).
import { args, client, errorEvent, out } from "./common.mjs";

const eddy = client();
const publisher = eddy.publisher(args.topic, args.idempotent ? { idempotent: true } : {});
publisher.on("disconnect", (info) => out({ event: "disconnect", code: info.code }));
let failed = null;
publisher.on("error", (error) => { failed = error; });
let acks = 0;
for (let start = 0; start < args.count && failed === null; start += args.wave) {
  const wave = [];
  for (let n = start; n < Math.min(start + args.wave, args.count); n += 1) {
    const record = { key: `k${n % 7}`, value: n };
    if (n === args.badAt) record.headers = { h: 5 };
    wave.push(publisher.send(record).then(
      (ack) => {
        acks += 1;
        out({ event: "ack", value: n, partition: ack.partition, offset: ack.offset });
      },
      (error) => out({ event: "refused", value: n, code: error.code, message: error.message }),
    ));
  }
  await Promise.all(wave);
}
if (failed) {
  out(errorEvent(failed));
  process.exit(1);
}
publisher.close();
out({ event: "done", acks, nextSequence: publisher.nextSequence });
