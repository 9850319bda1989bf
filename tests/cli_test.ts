/** The `kvpred` command as a user calls it: a new process, its stdout, stderr and exit code. */

import assert from "node:assert/strict";
import { expected, FIXTURE, FIXTURE_CONFIG, kvpred, maxAbsDiff, tempDir } from "./_helpers.ts";

const exp = await expected();
const idsArgs = exp.prompts.flatMap((p) => ["--ids", p.join(",")]);

for (const mode of ["kvp", "base"] as const) {
  Deno.test(`generate --mode ${mode} --json prints the fixture's ${mode}.generated`, async () => {
    const r = await kvpred(
      "generate",
      "--checkpoint",
      FIXTURE,
      "--mapping",
      "0,0,1,1",
      ...idsArgs,
      "--max-new-tokens",
      "6",
      "--mode",
      mode,
      "--json",
      "--logits",
    );
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    const want = await exp.ints(`${mode}.generated`);
    assert.deepEqual(out.tokens, [want.slice(0, 6), want.slice(6)]);
    assert.equal(out.mode, mode);
    assert.equal(out.runtime, "reference");
    assert.ok(out.ttft_ms > 0);
    const logits = await exp.floats(`${mode}.prefill_logits`);
    for (let b = 0; b < 2; b++) {
      const row = logits.subarray((b * 9 + 8) * 256, (b * 9 + 9) * 256);
      assert.ok(maxAbsDiff(out.first_logits[b], row) < 1e-4);
    }
  });
}

Deno.test("inspect --json recovers the per-layer sizes of tiny-kvp-c.json", async () => {
  const r = await kvpred("inspect", FIXTURE, "--json");
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.deepEqual(report.base.numQueryHeads, FIXTURE_CONFIG.base_layers.num_query_heads);
  assert.deepEqual(report.base.numKvHeads, FIXTURE_CONFIG.base_layers.num_kv_heads);
  assert.deepEqual(report.base.ffnDims, FIXTURE_CONFIG.base_layers.ffn_dims);
  assert.deepEqual(report.auxiliary.numQueryHeads, FIXTURE_CONFIG.aux_layers.num_query_heads);
  assert.deepEqual(report.auxiliary.numKvHeads, FIXTURE_CONFIG.aux_layers.num_kv_heads);
  assert.deepEqual(report.auxiliary.ffnDims, FIXTURE_CONFIG.aux_layers.ffn_dims);
  assert.deepEqual(report.mapping, [0, 0, 1, 1]);
  // 4 layers × (qkv + out + 2 ffn + 4 norms) + embedding + final norm.
  const base = 256 * 128 + 128 + [128, 256, 256, 256].reduce(
    (s, qkv, i) =>
      s + qkv * 128 + 128 * [64, 128, 128, 128][i] + 512 * 128 + 128 * 256 + 2 * 32 + 2 * 128,
    0,
  );
  assert.equal(report.base.parameterCount, base);
  const text = await kvpred("inspect", FIXTURE);
  assert.match(text.stdout, /base: 4 layers, d 128, head size 32, vocab 256/);
  assert.match(text.stdout, /kv heads +1 2 2 2/);
});

Deno.test("every command has --help", async () => {
  for (const cmd of [[], ["inspect"], ["generate"]]) {
    const r = await kvpred(...cmd, "--help");
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Usage: kvpred/);
  }
});

/** Asserts a one-line error on stderr matching `pattern` and a non-zero exit. */
async function fails(args: string[], pattern: RegExp): Promise<void> {
  const r = await kvpred(...args);
  assert.notEqual(r.code, 0, `exit code for ${args.join(" ")}`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line, got:\n${r.stderr}`);
  assert.match(lines[0], /^kvpred: /);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\bat .*\.ts:\d+/, "no stack trace");
  assert.equal(r.stdout, "");
}

Deno.test("bad input: one line on stderr, non-zero exit, no stack trace", async (ctx) => {
  await using dir = await tempDir();
  const gen = (...a: string[]) => ["generate", "--checkpoint", FIXTURE, ...a];
  await ctx.step(
    "token id ≥ vocabulary",
    () => fails(gen("--ids", "1,256"), /token id 256 is outside the vocabulary 0\.\.255/),
  );
  await ctx.step(
    "empty prompt",
    () => fails(gen("--ids", ""), /--ids '': a prompt needs at least one token id/),
  );
  await ctx.step(
    "malformed ids",
    () => fails(gen("--ids", "1,x"), /--ids '1,x': expected comma-separated/),
  );
  await ctx.step("no prompt", () => fails(gen(), /no prompt given/));
  await ctx.step(
    "unknown option",
    () => fails(gen("--ids", "1", "--frobnicate"), /Unknown option '--frobnicate'/),
  );
  await ctx.step(
    "bad mode",
    () => fails(gen("--ids", "1", "--mode", "fast"), /--mode 'fast': expected one of kvp, base/),
  );
  await ctx.step(
    "zero max-new-tokens",
    () => fails(gen("--ids", "1", "--max-new-tokens", "0"), /--max-new-tokens '0'/),
  );
  await ctx.step(
    "mapping out of range",
    () =>
      fails(
        gen("--ids", "1", "--mapping", "0,0,1,2"),
        /entry 3 is 2, outside the auxiliary layers 0\.\.1/,
      ),
  );
  await ctx.step(
    "missing file",
    () =>
      fails(
        ["generate", "--checkpoint", `${dir.path}/no.safetensors`, "--ids", "1"],
        /no\.safetensors: cannot open: no such file/,
      ),
  );
  await ctx.step("truncated file", async () => {
    const path = `${dir.path}/cut.safetensors`;
    await Deno.writeFile(path, (await Deno.readFile(FIXTURE)).subarray(0, 5000));
    await fails(["inspect", path], /cut\.safetensors: header length 7096 is larger than the file/);
  });
  await ctx.step(
    "incomplete set of part files",
    () => fails(["generate", "--base", FIXTURE, "--ids", "1"], /missing --aux and --predictor/),
  );
  await ctx.step("unknown command", () => fails(["frobnicate"], /unknown command 'frobnicate'/));
});
