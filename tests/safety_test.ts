/**
 * Hostile or wrong input through the CLI, as a user meets it: non-finite
 * weights, PyTorch pickles, duplicate header keys, confused classifiers and
 * predictors, bundles with missing, extra or altered files, and bad options —
 * each one line on stderr, a non-zero exit, no stack trace.
 */

import assert from "node:assert/strict";
import { convert } from "../graphs/bundle.ts";
import { editedFixture, FIXTURE, kvpred, tempDir } from "./_helpers.ts";

/** Runs kvpred and asserts one error line matching `pattern` and the exit `code`. */
async function refuses(args: string[], pattern: RegExp, code = 1): Promise<void> {
  const r = await kvpred(...args);
  assert.equal(r.code, code, `exit code of ${args.join(" ")}: ${r.stderr}`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^kvpred: /);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\bat .*\.ts:\d+/);
}

Deno.test("non-finite weights are refused, naming the tensor, unless --allow-nonfinite", async () => {
  await using tmp = await tempDir();
  const path = await editedFixture(tmp.path, "nan.safetensors", (es) =>
    es.map((e) => {
      if (e.name !== "base.layers.1.attn.qkv_proj.weight") return e;
      const data = (e.data as Float32Array).slice();
      data[5] = NaN;
      data[9] = Infinity;
      return { ...e, data };
    }));
  const gen = ["generate", "--checkpoint", path, "--ids", "1,2,3", "--max-new-tokens", "2"];
  await refuses(
    gen,
    /tensor 'base\.layers\.1\.attn\.qkv_proj\.weight' has 2 non-finite values \(first NaN at index 5\); use --allow-nonfinite/,
  );
  await refuses(
    ["convert", "--checkpoint", path, "--out", `${tmp.path}/b`],
    /has 2 non-finite values/,
  );
  assert.deepEqual([...Deno.readDirSync(tmp.path)].map((e) => e.name), ["nan.safetensors"]);
  const allowed = await kvpred(...gen, "--allow-nonfinite");
  assert.equal(allowed.code, 0, allowed.stderr);
});

Deno.test("PyTorch files are never unpickled: zips go through an allowlist, raw pickles are refused", async () => {
  await using tmp = await tempDir();
  // A torch.save zip whose state dict holds os.system('touch …') (tests/fixtures/torch/evil.pt).
  const evil = new URL("./fixtures/torch/evil.pt", import.meta.url).pathname;
  const marker = "/tmp/kvpred-evil-pt-ran";
  await Deno.remove(marker).catch(() => {});
  for (const args of [["inspect", evil], ["generate", "--checkpoint", evil, "--ids", "1"]]) {
    await refuses(
      args,
      /evil\.pt: evil\/data\.pkl: refuses the global 'posix\.system'.*nothing was run/,
    );
  }
  assert.equal(await Deno.stat(marker).then(() => true, () => false), false, "nothing ran");
  await Deno.writeFile(
    `${tmp.path}/model.pt`,
    new Uint8Array([0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0, 1, 2]),
  );
  await Deno.writeFile(
    `${tmp.path}/model.bin`,
    new Uint8Array([0x80, 0x02, 0x7d, 0x71, 0, 0, 0, 0, 0]),
  );
  await refuses(
    ["inspect", `${tmp.path}/model.pt`],
    /model\.pt: zip end-of-directory record not found/,
  );
  await refuses(
    ["inspect", `${tmp.path}/model.bin`],
    /model\.bin: a raw pickle, not a torch\.save zip; kvpred never unpickles raw pickles\. Re-save it .*_use_new_zipfile_serialization=True\)" \(or convert it to safetensors\)/,
  );
});

Deno.test("a header with a repeated key is refused", async () => {
  await using tmp = await tempDir();
  const json =
    '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
  const body = new TextEncoder().encode(json);
  const bytes = new Uint8Array(8 + body.length + 4);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(body.length), true);
  bytes.set(body, 8);
  await Deno.writeFile(`${tmp.path}/dup.safetensors`, bytes);
  await refuses(["inspect", `${tmp.path}/dup.safetensors`], /header repeats the key "a"/);
});

Deno.test("classifier, predictor bias and head size confusions are explained", async () => {
  await using tmp = await tempDir();
  const transposed = await editedFixture(tmp.path, "cls.safetensors", (es) => [
    ...es,
    {
      name: "base.classifier.weight",
      dtype: "F32",
      shape: [128, 256],
      data: new Float32Array(128 * 256),
    },
  ]);
  await refuses(
    ["inspect", transposed],
    /'base\.classifier\.weight' has shape \[128,256\], expected \[256,128\] \(a separate classifier is \[vocab, model dim\]; this one looks transposed\)/,
  );
  const bias = await editedFixture(
    tmp.path,
    "bias.safetensors",
    (es) =>
      es.map((e) =>
        e.name.endsWith("key_transforms.2.bias")
          ? { ...e, shape: [32], data: new Float32Array(32) }
          : e
      ),
  );
  await refuses(["inspect", bias], /key_transforms\.2\.bias' has shape \[32\], expected \[64\]/);
  const head = await editedFixture(
    tmp.path,
    "head.safetensors",
    (es) =>
      es.map((e) =>
        e.name === "auxiliary.layers.1.attn.k_norm.weight"
          ? { ...e, shape: [8], data: new Float32Array(8) }
          : e
      ),
  );
  await refuses(
    ["inspect", head],
    /'auxiliary\.layers\.1\.attn\.k_norm\.weight' has shape \[8\], expected \[16\] \(k_norm over the head size\)/,
  );
});

Deno.test("bundles with a missing, extra or altered file are refused; --no-verify skips the check", async () => {
  await using tmp = await tempDir();
  const good = `${tmp.path}/good`;
  await convert({ checkpoint: FIXTURE }, { out: good });
  const copy = async (name: string) => {
    const dir = `${tmp.path}/${name}`;
    await Deno.mkdir(`${dir}/onnx`, { recursive: true });
    for (
      const f of [
        "kvpred.json",
        "config.json",
        "onnx/model.onnx",
        "onnx/model_base.onnx",
        "onnx/model.onnx_data",
      ]
    ) {
      await Deno.copyFile(`${good}/${f}`, `${dir}/${f}`);
    }
    return dir;
  };
  const gen = (
    dir: string,
    ...more: string[]
  ) => ["generate", "--bundle", dir, "--ids", "1,2", "--max-new-tokens", "2", ...more];
  const missing = await copy("missing");
  await Deno.remove(`${missing}/config.json`);
  await refuses(gen(missing), /missing: file config\.json is missing/);
  const extra = await copy("extra");
  await Deno.writeTextFile(`${extra}/onnx/notes.txt`, "hi");
  await refuses(gen(extra), /extra: unexpected file onnx\/notes\.txt/);
  const altered = await copy("altered");
  const bytes = await Deno.readFile(`${altered}/onnx/model_base.onnx`);
  bytes[bytes.length - 1] ^= 1;
  await Deno.writeFile(`${altered}/onnx/model_base.onnx`, bytes);
  for (
    const cmd of [gen(altered), gen(altered, "--runtime", "reference"), [
      "validate",
      "--bundle",
      altered,
    ], ["bench", "--bundle", altered, "--prompt-lengths", "4"]]
  ) {
    await refuses(
      cmd,
      /altered: file onnx\/model_base\.onnx was altered \(sha256 [0-9a-f]{64}, recorded [0-9a-f]{64}\)/,
    );
  }
  const skipped = await kvpred(...gen(extra, "--no-verify"));
  assert.equal(skipped.code, 0, skipped.stderr);
});

Deno.test("bad options are refused before any heavy work, quoting the value", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/b`;
  await convert({ checkpoint: FIXTURE }, { out: bundle });
  // Corrupt the weights: a check that ran after verification would report that instead.
  const data = await Deno.readFile(`${bundle}/onnx/model.onnx_data`);
  data[0] ^= 1;
  await Deno.writeFile(`${bundle}/onnx/model.onnx_data`, data);
  const gen = (...a: string[]) => ["generate", "--bundle", bundle, ...a];
  await refuses(
    gen("--ids", "1,999"),
    /prompt 0: token id 999 is outside the vocabulary 0\.\.255/,
    2,
  );
  await refuses(
    gen("--ids", "1", "--max-new-tokens", "2048"),
    /--max-new-tokens 2048: with a 1-token prompt this exceeds the model's context of 2048 tokens/,
    2,
  );
  await refuses(
    gen("--ids", "1,-2"),
    /--ids '1,-2': expected comma-separated non-negative integers/,
    2,
  );
  await refuses(
    gen("--ids", "1", "--max-new-tokens", "-3"),
    /--max-new-tokens '-3': must be a whole number ≥ 1$/,
    2,
  );
  await refuses(
    ["generate", "--checkpoint", FIXTURE, "--ids", "1", "--mapping", "0,x"],
    /--mapping '0,x'/,
    2,
  );
  await refuses(
    ["validate", "--bundle", bundle, "--prompt-length", "0"],
    /--prompt-length '0': must be a whole number ≥ 1/,
    2,
  );
  await refuses(["validate", "--bundle", bundle, "--tolerance", "-1"], /--tolerance '-1'/, 2);
  await refuses(
    ["bench", "--bundle", bundle, "--prompt-lengths", "0,64"],
    /--prompt-lengths '0,64': lengths must be ≥ 1/,
    2,
  );
  await refuses(["flops", "--bundle", bundle, "--prompt-length", "0"], /--prompt-length '0'/, 2);
  await refuses(["convert", "--checkpoint", FIXTURE], /convert: --out DIR is required/, 2);
  await refuses(
    [
      "synth",
      "--base",
      "tiny-base",
      "--aux",
      "nope",
      "--out",
      `${tmp.path}/x.safetensors`,
    ],
    /--aux 'nope': unknown config/,
    2,
  );
  await refuses(["inspect", "--frobnicate"], /inspect: Unknown option '--frobnicate'/, 2);
  for (const cmd of ["validate", "bench"]) {
    await refuses(
      [cmd, "--bundle", bundle, "--verify", "--no-verify"],
      new RegExp(`${cmd}: give --verify or --no-verify, not both`),
      2,
    );
  }
  await refuses(
    ["bench", "--bundle", bundle, "--batch", "-2"],
    /--batch '-2': must be a whole/,
    2,
  );
});
