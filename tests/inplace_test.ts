/**
 * The in-place decode (runtime/ort.ts `OrtModel.inPlace`, `CacheUpdate`
 * `append`): on a fused bundle's float32 variants the cache is held with
 * room, and each decode step fetches the new keys and values (`appended.*`)
 * and writes them into it. On the trained fixture, for both graphs, a
 * left-padded batch of mixed lengths and enough steps to outgrow the room:
 * the same logits bit for bit as the copying decode (`inPlace: false`), the
 * same cache, rows selected and merged as before; the next state shares the
 * room, a state decoded from twice keeps what its first child wrote, and
 * disposing a state frees nothing a later one reads; where it does not apply
 * (plain form, f16) the graphs have no `appended.*` and nothing changes.
 *
 * @module
 */

import assert from "node:assert/strict";
import { IO } from "../bundle/contract.ts";
import { variantFromName } from "../converters/model/precision.ts";
import { convert } from "../graphs/bundle.ts";
import { argmaxRows } from "../runtime/greedy.ts";
import { cacheRoom, OrtModel, type OrtStep } from "../runtime/ort.ts";
import type { Mode } from "../runtime/types.ts";
import { tempDir } from "./_helpers.ts";

const TRAINED = new URL("./fixtures/trained-tiny/trained-tiny.safetensors", import.meta.url)
  .pathname;
const PROMPTS = new URL("./fixtures/trained-tiny/prompts.txt", import.meta.url).pathname;
const STEPS = 24;

/** Four held-out prompts of 3 to 33 tokens. */
async function prompts(): Promise<number[][]> {
  const lines = (await Deno.readTextFile(PROMPTS)).trim().split("\n");
  return [3, 16, 9, 33].map((n, i) => lines[i * 12].split(",").map(Number).slice(0, n));
}

/** Logits of the prefill and STEPS greedy steps, and the states of every step. */
async function run(model: OrtModel, ids: number[][], mode: Mode) {
  const input = model.batch(ids);
  const vocab = model.description.base.vocabSize;
  const logits: Float32Array[] = [];
  const states: OrtStep[] = [];
  let step = await model.prefill(input, mode);
  for (let s = 0; s <= STEPS; s++) {
    logits.push(step.logits.slice());
    states.push(step);
    if (s < STEPS) {
      step = await model.decode(step, argmaxRows(step.logits, input.batch, vocab), 1, mode);
    }
  }
  return { logits, states };
}

Deno.test("cacheRoom: a sixteenth more (at least 16), within the context where the need fits", () => {
  assert.equal(cacheRoom(10, 2048), 26);
  assert.equal(cacheRoom(2017, 2048), 2048);
  assert.equal(cacheRoom(1600, 2048), 1700);
  assert.equal(cacheRoom(2048, 2048), 2048);
  assert.equal(cacheRoom(2050, 2048), 2179);
});

Deno.test("in-place decode: the same logits and cache as copying, room kept, rows as before", async (t) => {
  await using tmp = await tempDir();
  const fused = `${tmp.path}/fused`, plain = `${tmp.path}/plain`;
  await convert({ checkpoint: TRAINED }, {
    out: fused,
    variants: ["fp32", "q8", "fp16"].map((n) => variantFromName(n)!),
    attention: "fused",
  });
  await convert({ checkpoint: TRAINED }, { out: plain, variants: [variantFromName("fp32")!] });
  const ids = await prompts();
  for (const variant of ["fp32", "q8"]) {
    const inPlace = await OrtModel.load(fused, { variant, verify: false });
    const copying = await OrtModel.load(fused, { variant, verify: false, inPlace: false });
    for (const mode of ["kvp", "base"] as const) {
      await t.step(`${variant} ${mode}: logits bit for bit, cache, room`, async () => {
        assert.ok(inPlace.inPlace() && !copying.inPlace());
        assert.equal(await inPlace.cacheUpdate(mode), "append");
        assert.equal(await copying.cacheUpdate(mode), "copy");
        const a = await run(inPlace, ids, mode), b = await run(copying, ids, mode);
        a.logits.forEach((l, s) => assert.deepEqual(l, b.logits[s], `step ${s}`));
        const width = (s: OrtStep) => s.mask.length / s.batch;
        for (const s of [1, 10, STEPS]) {
          const x = inPlace.cache(a.states[s]), y = copying.cache(b.states[s]);
          x.forEach((layer, i) => {
            assert.equal(layer.length, width(a.states[s]));
            assert.deepEqual(layer.key, y[i].key, `step ${s} layer ${i} keys`);
            assert.deepEqual(layer.value, y[i].value, `step ${s} layer ${i} values`);
          });
          // The copying decode's cache is exactly as long as the mask; the in-place one has room.
          assert.equal(b.states[s].past[0].dims[2], width(b.states[s]));
        }
        const rooms = a.states.slice(1).map((s) => s.past[0].dims[2]);
        const first = cacheRoom(width(a.states[1]), 256);
        assert.equal(rooms[0], first);
        assert.ok(rooms.every((r, s) => r >= width(a.states[s + 1])));
        assert.ok(new Set(rooms).size >= 2, `the room was outgrown: ${rooms}`);
      });
      await t.step(
        `${variant} ${mode}: states share the room, and never see a sibling's`,
        async () => {
          const input = inPlace.batch(ids);
          const vocab = inPlace.description.base.vocabSize;
          const next = (m: OrtModel, s: OrtStep, shift = 0) =>
            m.decode(
              s,
              argmaxRows(s.logits, input.batch, vocab).map((v) => (v + shift) % vocab),
              1,
              mode,
            );
          const [a1, b1] = [
            await next(inPlace, await inPlace.prefill(input, mode)),
            await next(copying, await copying.prefill(input, mode)),
          ];
          const a2 = await next(inPlace, a1), b2 = await next(copying, b1);
          const buffer = (s: OrtStep) => (s.past[0].data as Float32Array).buffer;
          assert.equal(buffer(a2), buffer(a1), "the next state writes into its parent's room");
          // A second child of a1 (other tokens) must not overwrite a2's column: it moves.
          const a2b = await next(inPlace, a1, 7), b2b = await next(copying, b1, 7);
          assert.notEqual(buffer(a2b), buffer(a1));
          assert.deepEqual(a2b.logits, b2b.logits);
          // Disposing the parent and the sibling leaves a2 whole: it decodes as copying's does.
          inPlace.dispose(a1);
          inPlace.dispose(a2b);
          const x = inPlace.cache(a2), y = copying.cache(b2);
          x.forEach((layer, i) => assert.deepEqual(layer.key, y[i].key, `layer ${i} keys`));
          x.forEach((layer, i) => assert.deepEqual(layer.value, y[i].value, `layer ${i} values`));
          const a3 = await next(inPlace, a2), b3 = await next(copying, b2);
          assert.deepEqual(a3.logits, b3.logits);
          assert.equal(buffer(a3), buffer(a2));
          // Three tokens in one step (GroupQueryAttention takes several only for one row):
          // appended in order, as copying's Concat has them.
          const [a1r, b1r] = [inPlace.selectRows(a3, [1]), copying.selectRows(b3, [1])];
          const three = Int32Array.from([5, 16, 27]);
          const a4 = await inPlace.decode(a1r, three, 3, mode),
            b4 = await copying.decode(b1r, three, 3, mode);
          assert.deepEqual(a4.logits, b4.logits);
          const x4 = inPlace.cache(a4), y4 = copying.cache(b4);
          x4.forEach((layer, i) => {
            assert.deepEqual(layer.key, y4[i].key, `layer ${i} keys`);
            assert.deepEqual(layer.value, y4[i].value, `layer ${i} values`);
          });
        },
      );
      await t.step(
        `${variant} ${mode}: rows selected and merged as from copying states`,
        async () => {
          const a = await run(inPlace, ids, mode), b = await run(copying, ids, mode);
          const s = 5;
          const pick = (m: OrtModel, st: OrtStep[]) =>
            m.concatRows([m.selectRows(st[s], [3, 0]), st[2]]);
          const x = pick(inPlace, a.states), y = pick(copying, b.states);
          assert.deepEqual(x.mask, y.mask);
          x.past.forEach((p, i) => assert.deepEqual(p.data, y.past[i].data, `cache ${i}`));
          const vocab = inPlace.description.base.vocabSize;
          const next = argmaxRows(x.logits, x.batch, vocab);
          const dx = await inPlace.decode(x, next, 1, mode),
            dy = await copying.decode(y, next, 1, mode);
          assert.deepEqual(dx.logits, dy.logits);
        },
      );
    }
    await inPlace.release();
    await copying.release();
  }
  await t.step("not where it cannot apply: plain form, f16 variants", async () => {
    const p = await OrtModel.load(plain, { verify: false });
    const f16 = await OrtModel.load(fused, { variant: "fp16", verify: false });
    for (const mode of ["kvp", "base"] as const) {
      assert.equal(p.inPlace(), false);
      assert.equal(f16.inPlace(), false);
      for (const m of [p, f16]) {
        assert.equal(await m.cacheUpdate(mode), "copy");
        assert.ok(!(await m.session(mode)).outputs.includes(IO.appendedKey(0)));
      }
      const step = await p.decode(await p.prefill(p.batch(ids), mode), new Int32Array(4), 1, mode);
      assert.equal(step.past[0].dims[2], step.mask.length / step.batch);
    }
    await p.release();
    await f16.release();
  });
});
