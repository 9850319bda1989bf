/**
 * A bounded load test of `kvpred serve` on loopback: 1, 8 and 32 concurrent
 * clients, a few hundred streamed requests in all, against a server that
 * takes one request at a time and one that batches (≤ 32): no request lost
 * or failed, every answer equal to the prompt's answer alone, and the
 * figures (throughput, p50/p99 TTFT) printed. The variant is
 * `KVPRED_SERVE_LOAD_VARIANT` (default fp32); `examples/serve_load.ts` runs
 * a longer one.
 */

import assert from "node:assert/strict";
import { variantFromName } from "../converters/model/precision.ts";
import { serveLoad } from "../examples/serve_load.ts";
import { trainedBundle } from "./_serve.ts";

const VARIANT = Deno.env.get("KVPRED_SERVE_LOAD_VARIANT") ?? "fp32";

Deno.test(`load: 1, 8 and 32 clients, one at a time and batched, every answer as alone (${VARIANT})`, async () => {
  const precision = variantFromName(VARIANT);
  assert.ok(
    precision,
    `KVPRED_SERVE_LOAD_VARIANT '${VARIANT}': expected fp32, q8, q4 or aux-X_base-Y`,
  );
  await using fixture = await trainedBundle([precision]);
  const rows = await serveLoad({
    bundle: fixture.bundle,
    variant: VARIANT,
    requests: 96,
    maxTokens: 8,
    clients: [1, 8, 32],
  });
  assert.equal(rows.length, 6);
  for (const row of rows) {
    const what = `${row.clients} clients, max batch ${row.maxBatch}`;
    assert.equal(row.report.failed, 0, `${what}: ${row.report.errors.join("; ")}`);
    assert.equal(row.wrong, 0, `${what}: answers differ from alone`);
    assert.ok(row.report.answers.every((a) => a.length === 8), `${what}: 8 tokens each`);
  }
  // Batching pays under load: at 32 clients the batched server answers faster than one at a time.
  const at32 = rows.filter((r) => r.clients === 32);
  assert.ok(
    at32[1].report.ttftMs.p50 < at32[0].report.ttftMs.p50,
    `p50 TTFT batched ${at32[1].report.ttftMs.p50} ms vs one at a time ${
      at32[0].report.ttftMs.p50
    } ms`,
  );
});
