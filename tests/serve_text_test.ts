/**
 * The server's per-request pieces: the sampler (greedy picks the first
 * largest; a seed fixes the draws; temperature and top_p give softmax's
 * frequencies over the nucleus only) and the streamed text (UTF-8 held back
 * until a character is whole, stop strings cut across token boundaries,
 * deltas adding up to the decoded continuation).
 */

import assert from "node:assert/strict";
import { Sampler, seed32 } from "../serve/sampling.ts";
import { TextStream } from "../serve/text.ts";
import { Tokenizer } from "../tokenizer/llama.ts";

Deno.test("sampler: greedy is the first largest logit; a seed fixes every draw", () => {
  assert.equal(new Sampler().pick(new Float32Array([1, 7, 7, 3])), 1);
  const logits = new Float32Array(50).map((_, i) => Math.sin(i));
  const draws = (seed: number) => {
    const s = new Sampler({ temperature: 1, seed });
    return Array.from({ length: 40 }, () => s.pick(logits));
  };
  assert.deepEqual(draws(7), draws(7));
  assert.notDeepEqual(draws(7), draws(8));
  assert.ok(new Set(draws(7)).size > 5, "draws spread over the vocabulary");
  assert.notEqual(seed32(2 ** 32 + 5), seed32(5));
  assert.notEqual(seed32(-1), seed32(1));
});

Deno.test("sampler: temperature and top_p give softmax's frequencies over the nucleus alone", () => {
  // p ∝ exp(l / T): with T = 2, logits [2, 1, 0, -30…] give 0.506, 0.307, 0.186, ~0.
  const logits = new Float32Array(20).fill(-30);
  logits.set([2, 1, 0]);
  const p = [2, 1, 0].map((l) => Math.exp(l / 2));
  const sum = p.reduce((a, b) => a + b);
  const counts = (topP: number) => {
    const s = new Sampler({ temperature: 2, topP, seed: 99 });
    const c = new Array(20).fill(0);
    for (let i = 0; i < 4000; i++) c[s.pick(logits)]++;
    return c;
  };
  const all = counts(1);
  [0, 1, 2].forEach((t) => {
    const expected = 4000 * p[t] / sum, sd = Math.sqrt(expected);
    assert.ok(
      Math.abs(all[t] - expected) < 4 * sd,
      `token ${t}: ${all[t]} vs ${expected.toFixed(0)}`,
    );
  });
  assert.ok(all.slice(3).every((c) => c < 5), "the tail is almost never drawn");
  // top_p 0.7: the nucleus is {0, 1} (0.506 < 0.7 ≤ 0.813), renormalised.
  const nucleus = counts(0.7);
  assert.equal(nucleus[0] + nucleus[1], 4000);
  const expected0 = 4000 * p[0] / (p[0] + p[1]);
  assert.ok(
    Math.abs(nucleus[0] - expected0) < 4 * Math.sqrt(expected0),
    `${nucleus[0]} vs ${expected0}`,
  );
  // top_p 0.5: the most likely token alone.
  assert.equal(counts(0.5)[0], 4000);
});

Deno.test("text stream: whole UTF-8 characters only, deltas adding up to the continuation", async () => {
  const tok = await Tokenizer.llama2();
  const prompt = tok.encode("Say");
  const ids = tok.encode(" café 😀 日本", { bos: false });
  const stream = new TextStream(tok, prompt);
  const deltas = ids.map((id) => stream.push(id).delta);
  deltas.push(stream.finish());
  const whole = tok.decode([...prompt, ...ids]).slice(tok.decode(prompt).length);
  assert.equal(deltas.join(""), whole);
  assert.ok(deltas.every((d) => !d.includes("\uFFFD")), JSON.stringify(deltas));
  // The emoji is four byte tokens: nothing shows until the fourth.
  const emoji = ids.findIndex((id) => tok.idToToken(id) === "<0xF0>");
  assert.deepEqual(deltas.slice(emoji, emoji + 4), ["", "", "", "😀"]);
  // A character cut off at the end is flushed as it decodes (U+FFFD per byte).
  const cut = new TextStream(tok, prompt);
  for (const id of ids.slice(0, emoji + 2)) cut.push(id);
  assert.equal(cut.finish(), "\uFFFD\uFFFD");
});

Deno.test("text stream: stop strings end the text before them, across tokens, and only when whole", async () => {
  const tok = await Tokenizer.llama2();
  const prompt = tok.encode("Q:");
  const ids = tok.encode(" one two. three", { bos: false });
  const run = (stop: string[]) => {
    const s = new TextStream(tok, prompt, stop);
    let text = "", stopped = false;
    for (const id of ids) {
      const d = s.push(id);
      text += d.delta;
      if (d.stopped) {
        stopped = true;
        break;
      }
    }
    return { text: stopped ? text : text + s.finish(), stopped };
  };
  const whole = tok.decode([...prompt, ...ids]).slice(tok.decode(prompt).length);
  assert.equal(whole.trim(), "one two. three");
  assert.deepEqual(run(["o. t"]), { text: whole.slice(0, whole.indexOf("o. t")), stopped: true });
  assert.deepEqual(run(["two", "one"]), {
    text: whole.slice(0, whole.indexOf("one")),
    stopped: true,
  });
  // A prefix of a stop string is held back, then released when the stop does not follow.
  assert.deepEqual(run(["two!"]), { text: whole, stopped: false });
  const s = new TextStream(tok, prompt, ["two!"]);
  const upToTwo = ids.slice(0, ids.findIndex((id) => tok.idToToken(id) === "▁two") + 1);
  const shown = upToTwo.map((id) => s.push(id).delta).join("");
  assert.equal(shown, whole.slice(0, whole.indexOf("two")), "'two' waits for what follows");
});
