/** The `kvpred` command as a user calls it: a new process, its stdout, stderr and exit code. */

import assert from "node:assert/strict";
import { CHECKPOINT_OPTIONS, THREADS_OPTION } from "../cli/_args.ts";
import { COMMANDS } from "../cli/main.ts";
import { VERIFY_OPTIONS } from "../cli/_verify.ts";
import { DEVICE_OPTION, NBITS_OPTION } from "../cli/_device.ts";
import {
  expected,
  failsOneLine,
  FIXTURE,
  FIXTURE_CONFIG,
  kvpred,
  maxAbsDiff,
  tempDir,
} from "./_helpers.ts";

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

/** The options a command's source declares in its `parse(…)` call, spreads included. */
async function declaredOptions(name: string): Promise<string[]> {
  const source = await Deno.readTextFile(new URL(`../cli/${name}.ts`, import.meta.url));
  const start = source.indexOf(`parse("${name}", args, {`);
  assert.ok(start >= 0, `cli/${name}.ts calls parse("${name}", args, {…})`);
  const body = source.slice(start, source.indexOf("\n    }", start));
  const spreads: Record<string, Record<string, unknown>> = {
    CHECKPOINT_OPTIONS,
    THREADS_OPTION,
    VERIFY_OPTIONS,
    DEVICE_OPTION,
    NBITS_OPTION,
  };
  const own = [...body.matchAll(/^\s+"?([a-z][\w-]*)"?: \{ type: "/gm)].map((m) => m[1]);
  const spread = [...body.matchAll(/\.\.\.(\w+)/g)].flatMap((m) => {
    assert.ok(spreads[m[1]], `cli/${name}.ts spreads ${m[1]}, unknown to this test`);
    return Object.keys(spreads[m[1]]);
  });
  return [...own, ...spread];
}

Deno.test("every command has --help: exit 0, its usage line and every option it takes", async () => {
  assert.deepEqual(
    COMMANDS.map((c) => c.name),
    [
      "inspect",
      "generate",
      "convert",
      "validate",
      "synth",
      "flops",
      "bench",
      "prune",
      "fit",
      "agree",
      "serve",
      "export",
    ],
  );
  const top = await kvpred("--help");
  assert.equal(top.code, 0);
  for (const { name } of COMMANDS) {
    assert.match(top.stdout, new RegExp(`^  ${name} `, "m"), `kvpred --help lists ${name}`);
    const r = await kvpred(name, "--help");
    assert.equal(r.code, 0, `${name} --help: ${r.stderr}`);
    assert.equal(r.stderr, "");
    assert.match(r.stdout, new RegExp(`^Usage: kvpred ${name} `));
    const options = await declaredOptions(name);
    assert.ok(options.length >= 2, `${name}: found its options (${options})`);
    for (const option of options) {
      assert.match(r.stdout, new RegExp(`--${option}\\b`), `${name} --help names --${option}`);
    }
  }
});

Deno.test("bad input: one line on stderr, exit 2 for usage and 1 for failures, no stack trace", async (ctx) => {
  await using dir = await tempDir();
  const gen = (...a: string[]) => ["generate", "--checkpoint", FIXTURE, ...a];
  await ctx.step(
    "token id ≥ vocabulary (usage: 2)",
    () => failsOneLine(gen("--ids", "1,256"), /token id 256 is outside the vocabulary 0\.\.255/, 2),
  );
  await ctx.step(
    "empty prompt",
    () => failsOneLine(gen("--ids", ""), /--ids '': a prompt needs at least one token id/, 2),
  );
  await ctx.step(
    "malformed ids",
    () => failsOneLine(gen("--ids", "1,x"), /--ids '1,x': expected comma-separated/, 2),
  );
  await ctx.step("no prompt", () => failsOneLine(gen(), /no prompt given/, 2));
  await ctx.step(
    "unknown option",
    () => failsOneLine(gen("--ids", "1", "--frobnicate"), /Unknown option '--frobnicate'/, 2),
  );
  await ctx.step(
    "bad mode",
    () =>
      failsOneLine(
        gen("--ids", "1", "--mode", "fast"),
        /--mode 'fast': expected one of kvp, base/,
        2,
      ),
  );
  await ctx.step(
    "zero max-new-tokens",
    () => failsOneLine(gen("--ids", "1", "--max-new-tokens", "0"), /--max-new-tokens '0'/, 2),
  );
  for (const value of ["-1", "-0.5"]) {
    await ctx.step(
      `--max-new-tokens ${value} (a negative value after a space) says it must be ≥ 1`,
      () =>
        failsOneLine(
          gen("--ids", "1", "--max-new-tokens", value),
          new RegExp(`--max-new-tokens '${value}': must be a whole number ≥ 1$`),
          2,
        ),
    );
  }
  await ctx.step(
    "--verify with --no-verify",
    () =>
      failsOneLine(
        ["generate", "--bundle", dir.path, "--ids", "1", "--verify", "--no-verify"],
        /generate: give --verify or --no-verify, not both/,
        2,
      ),
  );
  await ctx.step(
    "unknown config name",
    () =>
      failsOneLine(
        ["synth", "--base", "tiny-base", "--aux", "nope", "--out", `${dir.path}/x.safetensors`],
        /--aux 'nope': unknown config \(known: .*tiny-aux/,
        2,
      ),
  );
  await ctx.step(
    "mapping out of range",
    () =>
      failsOneLine(
        gen("--ids", "1", "--mapping", "0,0,1,2"),
        /entry 3 is 2, outside the auxiliary layers 0\.\.1/,
        1,
      ),
  );
  await ctx.step(
    "missing file",
    () =>
      failsOneLine(
        ["generate", "--checkpoint", `${dir.path}/no.safetensors`, "--ids", "1"],
        /no\.safetensors: cannot open: no such file$/,
        1,
      ),
  );
  await ctx.step("a file used as a folder: plain words, no OS error text", async () => {
    const file = `${dir.path}/plain.txt`;
    await Deno.writeTextFile(file, "x");
    for (
      const [args, pattern] of [
        [["inspect", `${file}/x.safetensors`], /x\.safetensors: cannot open: a part of the path/],
        [["generate", "--bundle", file, "--ids", "1"], /plain\.txt is not a folder/],
        [
          ["generate", ...gen("--prompt", "hi", "--tokenizer", `${file}/t.json`).slice(1)],
          /t\.json: cannot read: a part of the path is not a folder$/,
        ],
      ] as const
    ) {
      const r = await kvpred(...args);
      assert.doesNotMatch(r.stderr, /os error|No such file or directory|NotADirectory/, r.stderr);
      assert.match(r.stderr.trim(), pattern);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
  });
  await ctx.step("truncated file", async () => {
    const path = `${dir.path}/cut.safetensors`;
    await Deno.writeFile(path, (await Deno.readFile(FIXTURE)).subarray(0, 5000));
    await failsOneLine(
      ["inspect", path],
      /cut\.safetensors: header length 7096 is larger than the file/,
      1,
    );
  });
  await ctx.step(
    "incomplete set of part files",
    () =>
      failsOneLine(
        ["generate", "--base", FIXTURE, "--ids", "1"],
        /missing --aux and --predictor/,
        2,
      ),
  );
  await ctx.step(
    "unknown command",
    () => failsOneLine(["frobnicate"], /unknown command 'frobnicate'/, 2),
  );
});
