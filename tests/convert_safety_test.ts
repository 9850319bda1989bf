/**
 * Conversion at scale: memory stays flat (weights stream through fixed
 * buffers), and an interrupted conversion (SIGINT) leaves no bundle and no
 * temporary files.
 */

import assert from "node:assert/strict";
import { synthesize } from "../converters/model/synth.ts";
import { tempDir } from "./_helpers.ts";

const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;

Deno.test("convert's peak memory grows by less than half the checkpoint's size", async () => {
  await using tmp = await tempDir();
  const ckpt = `${tmp.path}/s.safetensors`;
  // About 1 GB: large enough that the fixed cost of a conversion (graph building, the
  // modules it loads: ~50 MB) does not decide the result; only a copy of the weights would.
  await synthesize({ base: "OpenELM-270M", aux: "small-aux", vocab: 8192, out: ckpt });
  const size = (await Deno.stat(ckpt)).size;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./_peak_convert.ts", import.meta.url).pathname,
      ckpt,
      `${tmp.path}/b`,
    ],
    stdout: "piped",
  }).output();
  assert.equal(out.code, 0);
  const { growth } = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.ok(growth < size / 2, `peak RSS grew ${growth} bytes for a ${size}-byte checkpoint`);
});

Deno.test("SIGINT halfway through convert leaves no bundle and no temporary files", async () => {
  await using tmp = await tempDir();
  const ckpt = `${tmp.path}/big.safetensors`;
  await synthesize({ base: "small-base", aux: "small-aux", vocab: 50000, out: ckpt });
  assert.ok((await Deno.stat(ckpt)).size > 200e6, "a multi-hundred-megabyte checkpoint");
  const out = `${tmp.path}/bundle`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--node-modules-dir=manual",
      MAIN,
      "convert",
      "--checkpoint",
      ckpt,
      "--out",
      out,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  // Wait until weights are being written, then interrupt.
  const deadline = Date.now() + 60_000;
  let writing = false;
  while (!writing && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    for (const e of Deno.readDirSync(tmp.path)) {
      if (!e.name.startsWith("bundle.partial-")) continue;
      try {
        writing = Deno.statSync(`${tmp.path}/${e.name}/onnx/model.onnx_data`).size > 1e6;
      } catch { /* not there yet */ }
    }
  }
  assert.ok(writing, "the conversion started writing weights");
  child.kill("SIGINT");
  const status = await child.output();
  const stderr = new TextDecoder().decode(status.stderr).trim();
  assert.equal(status.code, 130, stderr);
  assert.match(stderr, /^kvpred: interrupted; no bundle written$/);
  assert.deepEqual([...Deno.readDirSync(tmp.path)].map((e) => e.name), ["big.safetensors"]);
});

/** Mounts a small tmpfs (root only) for a test; undefined where mounting is not allowed. */
async function tmpfs(dir: string, options: string): Promise<string | undefined> {
  const status = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", options, "tmpfs", dir],
    stderr: "null",
  }).output().catch(() => undefined);
  return status?.success ? dir : undefined;
}

const canMount = Deno.uid?.() === 0;
const NOT_ROOT = "mounting a tmpfs needs root: the full-disk / read-only test is skipped";
if (!canMount) console.warn(`convert_safety_test: ${NOT_ROOT}`);

Deno.test({
  name: `a full disk or a read-only target: one line, non-zero exit, nothing left behind${
    canMount ? "" : ` (SKIPPED: ${NOT_ROOT})`
  }`,
  ignore: !canMount,
  async fn() {
    await using tmp = await tempDir();
    const fixture = new URL("./fixtures/corenet/tiny-kvp-c.safetensors", import.meta.url).pathname;
    for (
      const [label, options, pattern] of [
        ["disk full", "size=1m", /\(no space left on device\)/],
        ["read-only", "ro,size=8m", /\(read-only file system\)/],
      ] as const
    ) {
      const mnt = `${tmp.path}/${label.replace(/\W/g, "")}`;
      await Deno.mkdir(mnt);
      assert.ok(await tmpfs(mnt, options), `mount ${options}`);
      try {
        const r = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            "--node-modules-dir=manual",
            MAIN,
            "convert",
            "--checkpoint",
            fixture,
            "--out",
            `${mnt}/bundle`,
          ],
          stdout: "piped",
          stderr: "piped",
          env: { NO_COLOR: "1" },
        }).output();
        const stderr = new TextDecoder().decode(r.stderr).trim();
        assert.equal(r.code, 1, label);
        assert.equal(stderr.split("\n").length, 1, stderr);
        assert.match(stderr, /^kvpred: .*bundle: cannot write the bundle \(/);
        assert.match(stderr, pattern);
        assert.doesNotMatch(stderr, /os error/);
        assert.deepEqual([...Deno.readDirSync(mnt)], [], `${label}: nothing left behind`);
      } finally {
        await new Deno.Command("umount", { args: [mnt] }).output();
      }
    }
  },
});

/** Whether this machine can make a file undeletable: chattr +i as root, a read-only folder otherwise. */
const canPin = Deno.uid?.() !== 0 || await (async () => {
  const probe = await Deno.makeTempFile({ prefix: "kvpred-chattr-" });
  const chattr = (flag: string) =>
    new Deno.Command("chattr", { args: [flag, probe], stderr: "null" }).output()
      .then((o) => o.success, () => false);
  const ok = await chattr("+i") && await chattr("-i");
  await Deno.remove(probe).catch(() => {});
  return ok;
})();
const NO_CHATTR = "chattr +i is not available here: the failed-removal test is skipped";
if (!canPin) console.warn(`convert_safety_test: ${NO_CHATTR}`);

/** Makes `path` undeletable; returns the undo, given where the file is by then. */
async function undeletable(path: string): Promise<(now: string) => Promise<void>> {
  const dir = (p: string) => p.replace(/\/[^/]*$/, "");
  if (Deno.uid?.() === 0) {
    await new Deno.Command("chattr", { args: ["+i", path] }).output();
    return async (now) => void await new Deno.Command("chattr", { args: ["-i", now] }).output();
  }
  await Deno.chmod(dir(path), 0o500);
  return (now) => Deno.chmod(dir(now), 0o700);
}

Deno.test({
  name:
    `convert --force: when the old bundle cannot be removed, the message says the new one is in place${
      canPin ? "" : ` (SKIPPED: ${NO_CHATTR})`
    }`,
  ignore: !canPin,
  async fn() {
    await using tmp = await tempDir();
    const fixture = new URL("./fixtures/corenet/tiny-kvp-c.safetensors", import.meta.url).pathname;
    const out = `${tmp.path}/bundle`;
    const convert = (...more: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--node-modules-dir=manual",
          MAIN,
          "convert",
          "--checkpoint",
          fixture,
          "--out",
          out,
          ...more,
        ],
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
    assert.equal((await convert()).code, 0);
    const oldCreated = JSON.parse(await Deno.readTextFile(`${out}/kvpred.json`)).created;
    const release = await undeletable(`${out}/onnx/model.onnx`);
    let old: string;
    try {
      const r = await convert("--force");
      const stderr = new TextDecoder().decode(r.stderr).trim();
      assert.equal(r.code, 1, stderr);
      const m = new RegExp(
        `^kvpred: ${out}: the new bundle is in place, but the old one could not be removed ` +
          `\\((operation not permitted|permission denied)\\); what remains of it is at (${out}\\.old-[0-9a-f]{8})$`,
      ).exec(stderr);
      assert.ok(m, stderr);
      old = m[2];
      const manifest = JSON.parse(await Deno.readTextFile(`${out}/kvpred.json`));
      assert.notEqual(manifest.created, oldCreated, "the new bundle is at --out");
      assert.ok(
        (await Deno.stat(`${old}/onnx/model.onnx`)).isFile,
        "the old copy is where it says",
      );
      assert.deepEqual(
        [...Deno.readDirSync(tmp.path)].map((e) => e.name).sort(),
        ["bundle", old.slice(tmp.path.length + 1)],
        "no temporary folder left",
      );
    } finally {
      // Wherever the pinned file went (even when an assertion failed early), unpin it.
      const aside = [...Deno.readDirSync(tmp.path)].find((e) => e.name.startsWith("bundle.old-"));
      await release(`${aside ? `${tmp.path}/${aside.name}` : out}/onnx/model.onnx`);
    }
  },
});
