/**
 * Bundle verification with a record (bundle/verify.ts): a second check hashes
 * nothing, a changed file is re-hashed and caught, `full` (`--verify`)
 * re-hashes everything, missing and extra files are refused whatever the
 * record says, and Ctrl-C stops hashing with exit 130.
 */

import assert from "node:assert/strict";
import { BundleError } from "../bundle/contract.ts";
import { readManifest } from "../bundle/manifest.ts";
import { defaultCacheDir, recordPath, verifyBundle } from "../bundle/verify.ts";
import { convert } from "../graphs/bundle.ts";
import { FIXTURE, kvpred, tempDir } from "./_helpers.ts";

/** A fresh bundle of the fixture, its total size, and a cache folder of its own. */
async function setup(dir: string) {
  const bundle = `${dir}/b`;
  await convert({ checkpoint: FIXTURE }, { out: bundle });
  const manifest = await readManifest(bundle);
  let total = 0;
  for (const f of Object.keys(manifest.files)) total += (await Deno.stat(`${bundle}/${f}`)).size;
  return { bundle, manifest, total, cacheDir: `${dir}/cache` };
}

/** Flips the last byte of a bundle file in place: same size, same inode. */
async function flipLastByte(path: string): Promise<void> {
  const bytes = await Deno.readFile(path);
  bytes[bytes.length - 1] ^= 1;
  await Deno.writeFile(path, bytes);
}

const ALTERED = /file onnx\/model_base\.onnx was altered \(sha256 [0-9a-f]{64}, recorded/;

Deno.test("the second verification hashes nothing; --verify (full) hashes every byte", async () => {
  await using tmp = await tempDir();
  const { bundle, manifest, total, cacheDir } = await setup(tmp.path);
  const files = Object.keys(manifest.files).length;
  let progressCalls = 0;
  const onProgress = () => void progressCalls++;
  const first = await verifyBundle(bundle, manifest, { cacheDir, onProgress });
  assert.deepEqual(
    { files: first.files, filesHashed: first.filesHashed, bytesHashed: first.bytesHashed },
    { files, filesHashed: files, bytesHashed: total },
  );
  assert.ok(progressCalls >= files, `progress reported (${progressCalls} calls)`);
  const real = await Deno.realPath(bundle);
  assert.equal(first.record, recordPath(cacheDir, real));
  assert.ok(first.record!.startsWith(`${cacheDir}/verified/`), "outside the bundle");
  assert.equal((await Deno.stat(first.record!)).isFile, true);

  progressCalls = 0;
  const second = await verifyBundle(bundle, manifest, { cacheDir, onProgress });
  assert.equal(second.filesHashed, 0);
  assert.equal(second.bytesHashed, 0);
  assert.equal(progressCalls, 0, "no progress: nothing was read");

  const full = await verifyBundle(bundle, manifest, { cacheDir, full: true });
  assert.equal(full.filesHashed, files);
  assert.equal(full.bytesHashed, total);

  const none = await verifyBundle(bundle, manifest, { cacheDir: null });
  assert.equal(none.bytesHashed, total, "no record: everything hashed");
  assert.equal(none.record, undefined);
});

Deno.test("a file changed with a new mtime is re-hashed and caught; only that file is re-hashed", async () => {
  await using tmp = await tempDir();
  const { bundle, manifest, cacheDir } = await setup(tmp.path);
  const first = await verifyBundle(bundle, manifest, { cacheDir });
  const recordBefore = await Deno.readTextFile(first.record!);
  const path = `${bundle}/onnx/model_base.onnx`;
  const { mtime } = await Deno.stat(path);
  await flipLastByte(path);
  await Deno.utime(path, new Date(), new Date(mtime!.getTime() + 5000)); // surely a new mtime
  await assert.rejects(verifyBundle(bundle, manifest, { cacheDir }), ALTERED);
  assert.equal(await Deno.readTextFile(first.record!), recordBefore, "a failure records nothing");
  await assert.rejects(verifyBundle(bundle, manifest, { cacheDir }), ALTERED, "still caught");
  // Put the byte back (mtime changes again): only that file is hashed, and it passes.
  await flipLastByte(path);
  const again = await verifyBundle(bundle, manifest, { cacheDir });
  assert.equal(again.filesHashed, 1);
  assert.equal(again.bytesHashed, (await Deno.stat(path)).size);
});

Deno.test("by design, a same-size edit with its mtime set back is missed until a full check", async () => {
  await using tmp = await tempDir();
  const { bundle, manifest, cacheDir } = await setup(tmp.path);
  await verifyBundle(bundle, manifest, { cacheDir });
  const path = `${bundle}/onnx/model_base.onnx`;
  const before = await Deno.stat(path);
  await flipLastByte(path);
  await Deno.utime(path, before.atime!, before.mtime!);
  const after = await Deno.stat(path);
  assert.deepEqual([after.size, after.ino, after.mtime?.getTime()], [
    before.size,
    before.ino,
    before.mtime?.getTime(),
  ]);
  const quick = await verifyBundle(bundle, manifest, { cacheDir });
  assert.equal(quick.filesHashed, 0, "not re-hashed: the documented blind spot");
  await assert.rejects(verifyBundle(bundle, manifest, { cacheDir, full: true }), ALTERED);
});

Deno.test("missing and extra files are refused even when the record says verified", async () => {
  await using tmp = await tempDir();
  const { bundle, manifest, cacheDir } = await setup(tmp.path);
  await verifyBundle(bundle, manifest, { cacheDir });
  await Deno.writeTextFile(`${bundle}/onnx/notes.txt`, "hi");
  await assert.rejects(
    verifyBundle(bundle, manifest, { cacheDir }),
    (e: Error) => e instanceof BundleError && /unexpected file onnx\/notes\.txt/.test(e.message),
  );
  await Deno.remove(`${bundle}/onnx/notes.txt`);
  const config = await Deno.readFile(`${bundle}/config.json`);
  await Deno.remove(`${bundle}/config.json`);
  await assert.rejects(
    verifyBundle(bundle, manifest, { cacheDir }),
    (e: Error) => e instanceof BundleError && /file config\.json is missing/.test(e.message),
  );
  // Restored under a new inode: re-hashed, and it matches again.
  await Deno.writeFile(`${bundle}/config.json`, config);
  const back = await verifyBundle(bundle, manifest, { cacheDir });
  assert.equal(back.filesHashed, 1);
});

Deno.test("an aborted check rejects with the signal's reason and records nothing", async () => {
  await using tmp = await tempDir();
  const { bundle, manifest, cacheDir } = await setup(tmp.path);
  const controller = new AbortController();
  const reason = new Error("stop");
  let hashed = 0;
  await assert.rejects(
    verifyBundle(bundle, manifest, {
      cacheDir,
      signal: controller.signal,
      onProgress: (done) => {
        hashed = done;
        controller.abort(reason);
      },
    }),
    (e) => e === reason,
  );
  assert.ok(hashed > 0, "hashing had started");
  const real = await Deno.realPath(bundle);
  assert.equal(await Deno.stat(recordPath(cacheDir, real)).then(() => true, () => false), false);
});

Deno.test("the cache folder: KVPRED_CACHE_DIR, else XDG_CACHE_HOME/kvpred, else ~/.cache/kvpred", () => {
  const saved = ["KVPRED_CACHE_DIR", "XDG_CACHE_HOME", "HOME"].map((k) => [k, Deno.env.get(k)]);
  try {
    Deno.env.set("KVPRED_CACHE_DIR", "/c/kv");
    Deno.env.set("XDG_CACHE_HOME", "/c/xdg");
    Deno.env.set("HOME", "/home/u");
    assert.equal(defaultCacheDir(), "/c/kv");
    Deno.env.delete("KVPRED_CACHE_DIR");
    assert.equal(defaultCacheDir(), "/c/xdg/kvpred");
    Deno.env.delete("XDG_CACHE_HOME");
    assert.equal(defaultCacheDir(), "/home/u/.cache/kvpred");
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k!) : Deno.env.set(k!, v);
  }
});

Deno.test("CLI: --verify catches what the record misses; generate, validate and bench take it", async () => {
  await using tmp = await tempDir();
  const { bundle } = await setup(tmp.path);
  const gen = (...more: string[]) =>
    kvpred("generate", "--bundle", bundle, "--ids", "1,2", "--max-new-tokens", "1", ...more);
  assert.equal((await gen()).code, 0); // verified and recorded
  const path = `${bundle}/onnx/model_base.onnx`;
  const before = await Deno.stat(path);
  await flipLastByte(path);
  await Deno.utime(path, before.atime!, before.mtime!);
  const quick = await gen();
  assert.equal(quick.code, 0, `the record is trusted: ${quick.stderr}`);
  for (
    const args of [
      ["generate", "--bundle", bundle, "--ids", "1,2", "--verify"],
      ["validate", "--bundle", bundle, "--verify"],
      ["bench", "--bundle", bundle, "--verify"],
    ]
  ) {
    const r = await kvpred(...args);
    assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr.trim(), new RegExp(`^kvpred: ${bundle}: ${ALTERED.source}`));
  }
});

Deno.test({
  name: "CLI: Ctrl-C while hashing prints 'kvpred: interrupted' and exits 130",
  ignore: !(() => {
    try {
      return Deno.statSync("/proc/self/fd").isDirectory;
    } catch {
      return false;
    }
  })(),
  async fn() {
    await using tmp = await tempDir();
    const { bundle } = await setup(tmp.path);
    // A 4 GiB sparse file listed in the manifest: long to hash, cheap to make.
    const manifest = JSON.parse(await Deno.readTextFile(`${bundle}/kvpred.json`));
    manifest.files["big.bin"] = "0".repeat(64);
    await Deno.writeTextFile(`${bundle}/kvpred.json`, JSON.stringify(manifest));
    using big = await Deno.open(`${bundle}/big.bin`, { write: true, create: true });
    await big.truncate(4 * 2 ** 30);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--node-modules-dir=manual",
        new URL("../cli/main.ts", import.meta.url).pathname,
        "generate",
      ].concat(
        ["--bundle", bundle, "--ids", "1"],
      ),
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Interrupt once the child has big.bin open, i.e. while it hashes it.
    const hashing = () => {
      try {
        for (const fd of Deno.readDirSync(`/proc/${child.pid}/fd`)) {
          if (Deno.readLinkSync(`/proc/${child.pid}/fd/${fd.name}`).endsWith("/big.bin")) {
            return true;
          }
        }
      } catch { /* the child is starting or gone */ }
      return false;
    };
    const deadline = Date.now() + 60_000;
    while (!hashing() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.ok(hashing(), "the child started hashing big.bin");
    child.kill("SIGINT");
    const out = await child.output();
    const stderr = new TextDecoder().decode(out.stderr).trim();
    assert.equal(out.code, 130, stderr);
    assert.equal(stderr, "kvpred: interrupted");
  },
});
