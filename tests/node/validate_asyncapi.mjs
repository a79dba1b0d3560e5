// Validates an AsyncAPI document with the official parser (@asyncapi/parser, pinned in the
// root package.json): schema validation plus its built-in Spectral ruleset.
// Usage: node tests/node/validate_asyncapi.mjs openapi/asyncapi.yaml
// Prints every diagnostic as JSON (one per line) and exits 1 on any error or warning.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "information", "hint"];
const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(await readFile(path, "utf8"), {
  source: path,
});
for (const d of diagnostics) {
  console.log(
    JSON.stringify({
      severity: SEVERITY[d.severity],
      code: d.code,
      path: d.path.join("/"),
      message: d.message,
    }),
  );
}
const failed = document === undefined || diagnostics.some((d) => d.severity <= 1);
console.log(
  failed ? "INVALID" : `VALID: ${document.info().title()} ${document.info().version()}, ` +
    `${document.channels().length} channels, ${document.operations().length} operations`,
);
process.exit(failed ? 1 : 0);
