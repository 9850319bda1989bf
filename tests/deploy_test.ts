/**
 * Descriptors for other engines, checked as far as this machine can:
 * - onnxruntime-genai (not installable here): `genai_config.json` uses only
 *   keys and types genai's parser accepts (src/config.cpp), and replaying
 *   genai's call sequence with onnxruntime-node — the whole prompt with an
 *   empty past, then one token at a time, outputs bound at the shapes genai
 *   allocates — from nothing but the config and the folder gives kvpred's
 *   tokens.
 * - Triton Inference Server (not run here): `config.pbtxt` lists exactly the
 *   graph's own inputs and outputs, types and dims (batch axis left out),
 *   the external data sits beside `1/model.onnx` under the name the graph
 *   records, and the model loads from there.
 */

import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { generateJson, trainedBundle } from "./_serve.ts";
import { kvpred } from "./_helpers.ts";

// Keys genai's JSON parser accepts (microsoft/onnxruntime-genai src/config.cpp at a0c04eb:
// Model_Element, Decoder_Element, SessionOptions_Element, DecoderInputs/Outputs_Element,
// Search_Element); any other key is its unknown_value_error. "int" fields go through
// SafeDoubleToInt, so they must be whole numbers.
type Kind = "int" | "float" | "bool" | "string" | "object" | "array";
const GENAI_SCHEMA: Record<string, Record<string, Kind>> = {
  root: { model: "object", search: "object", speculative: "object", engine: "object" },
  model: {
    type: "string",
    tokenizer_dir: "string",
    vocab_size: "int",
    context_length: "int",
    pad_token_id: "int",
    eos_token_id: "int",
    bos_token_id: "int",
    decoder_start_token_id: "int",
    sep_token_id: "int",
    encoder: "object",
    decoder: "object",
  },
  decoder: {
    filename: "string",
    hidden_size: "int",
    num_attention_heads: "int",
    num_hidden_layers: "int",
    num_key_value_heads: "int",
    head_size: "int",
    session_options: "object",
    run_options: "object",
    inputs: "object",
    outputs: "object",
    sliding_window: "object",
    layer_types: "array",
  },
  session_options: {
    log_id: "string",
    enable_profiling: "string",
    intra_op_num_threads: "int",
    inter_op_num_threads: "int",
    log_severity_level: "int",
    enable_cpu_mem_arena: "bool",
    enable_mem_pattern: "bool",
    graph_optimization_level: "string",
    provider_options: "array",
  },
  inputs: {
    input_ids: "string",
    inputs_embeds: "string",
    attention_mask: "string",
    position_ids: "string",
    past_key_names: "string",
    past_value_names: "string",
    past_names: "string",
    past_sequence_length: "string",
    total_sequence_length: "string",
  },
  outputs: {
    logits: "string",
    present_key_names: "string",
    present_value_names: "string",
    present_names: "string",
  },
  search: {
    min_length: "int",
    max_length: "int",
    batch_size: "int",
    num_beams: "int",
    num_return_sequences: "int",
    top_k: "int",
    top_p: "float",
    temperature: "float",
    repetition_penalty: "float",
    length_penalty: "float",
    no_repeat_ngram_size: "int",
    diversity_penalty: "float",
    random_seed: "int",
    do_sample: "bool",
    past_present_share_buffer: "bool",
    early_stopping: "bool",
  },
};
// genai's ModelType::IsLLM list (src/models/model_type.h): the decoder-only types.
const GENAI_LLM_TYPES = ["decoder", "llama", "mistral", "phi", "phi3", "qwen2", "gemma", "gpt2"];

function checkSchema(value: Record<string, unknown>, element: string, path: string): void {
  const schema = GENAI_SCHEMA[element];
  for (const [key, v] of Object.entries(value)) {
    const kind = schema[key];
    assert.ok(kind, `${path}.${key}: genai does not accept this key`);
    const ok = {
      int: () => typeof v === "number" && Number.isInteger(v),
      float: () => typeof v === "number",
      bool: () => typeof v === "boolean",
      string: () => typeof v === "string",
      object: () => typeof v === "object" && v !== null && !Array.isArray(v),
      array: () => Array.isArray(v),
    }[kind]();
    assert.ok(ok, `${path}.${key}: expected ${kind}, got ${JSON.stringify(v)}`);
    if (kind === "object") {
      checkSchema(
        v as Record<string, unknown>,
        key === "model" || key === "search" ? key : key,
        `${path}.${key}`,
      );
    }
  }
}

/** The per-layer names genai composes from a `%d` template. */
const layerName = (template: string, i: number) => template.replace("%d", String(i));

/**
 * genai's greedy loop, from the folder and its config alone: prompt with an
 * empty past (per-layer KV heads from the graph's inputs, as genai detects
 * them), then one token per call with the mask grown by one; logits bound at
 * [1, 1, vocab] (genai's rule for a graph whose logits' second dim is 1),
 * presents at [1, k, total, head_size] (past_present_share_buffer false).
 */
async function genaiReplay(folder: string, prompt: number[], maxNew: number): Promise<number[]> {
  const config = JSON.parse(await Deno.readTextFile(`${folder}/genai_config.json`));
  const { decoder, vocab_size: vocab, eos_token_id: eos } = config.model;
  const session = await ort.InferenceSession.create(`${folder}/${decoder.filename}`);
  const meta = new Map(session.inputMetadata.map((m) => [m.name, m]));
  const logitsMeta = session.outputMetadata.find((m) => m.name === decoder.outputs.logits)!;
  assert.ok(logitsMeta.isTensor);
  const pruned = logitsMeta.shape[1] === 1;
  assert.ok(pruned, "logits [batch, 1, vocab]: genai binds its last-token logits");
  const heads = Array.from({ length: decoder.num_hidden_layers }, (_, i) => {
    const m = meta.get(layerName(decoder.inputs.past_key_names, i));
    assert.ok(m?.isTensor, `input ${layerName(decoder.inputs.past_key_names, i)}`);
    assert.equal(m.shape[3], decoder.head_size);
    return m.shape[1] as number;
  });
  let past: ort.Tensor[][] = heads.map((k) =>
    [0, 1].map(() => new ort.Tensor("float32", new Float32Array(0), [1, k, 0, decoder.head_size]))
  );
  let ids = prompt, total = prompt.length;
  const out: number[] = [];
  while (out.length < maxNew) {
    const feeds: Record<string, ort.Tensor> = {
      [decoder.inputs.input_ids]: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [
        1,
        ids.length,
      ]),
      [decoder.inputs.attention_mask]: new ort.Tensor("int64", new BigInt64Array(total).fill(1n), [
        1,
        total,
      ]),
    };
    const fetches: Record<string, ort.Tensor> = {
      [decoder.outputs.logits]: new ort.Tensor("float32", new Float32Array(vocab), [1, 1, vocab]),
    };
    heads.forEach((k, i) => {
      feeds[layerName(decoder.inputs.past_key_names, i)] = past[i][0];
      feeds[layerName(decoder.inputs.past_value_names, i)] = past[i][1];
      for (const name of [decoder.outputs.present_key_names, decoder.outputs.present_value_names]) {
        fetches[layerName(name, i)] = new ort.Tensor(
          "float32",
          new Float32Array(k * total * decoder.head_size),
          [1, k, total, decoder.head_size],
        );
      }
    });
    const result = await session.run(feeds, fetches);
    const logits = result[decoder.outputs.logits].data as Float32Array;
    let best = 0;
    for (let v = 1; v < vocab; v++) if (logits[v] > logits[best]) best = v;
    out.push(best);
    if (best === eos) break;
    past = heads.map((_, i) => [
      result[layerName(decoder.outputs.present_key_names, i)],
      result[layerName(decoder.outputs.present_value_names, i)],
    ]);
    ids = [best];
    total++;
  }
  await session.release();
  return out;
}

Deno.test("kvpred export --format genai: genai's schema, and genai's call sequence gives kvpred's tokens", async () => {
  await using fixture = await trainedBundle([{ auxiliary: "fp32", base: "fp32" }, {
    auxiliary: "q4",
    base: "q4",
  }]);
  const prompts = ["The capital of France is", "Hello world"];
  for (const dtype of ["fp32", "q4"]) {
    const out = `${fixture.dir}/genai-${dtype}`;
    const r = await kvpred(
      "export",
      "--bundle",
      fixture.bundle,
      "--format",
      "genai",
      "--out",
      out,
      "--dtype",
      dtype,
    );
    assert.equal(r.code, 0, r.stderr);
    const suffix = dtype === "fp32" ? "" : "_q4";
    assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), [
      "genai_config.json",
      `model${suffix}.onnx`,
      `model${suffix}.onnx_data`,
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    const config = JSON.parse(await Deno.readTextFile(`${out}/genai_config.json`));
    checkSchema(config, "root", "genai_config");
    assert.ok(GENAI_LLM_TYPES.includes(config.model.type));
    assert.equal(config.search.past_present_share_buffer, false);
    assert.equal(config.search.do_sample, false);
    assert.deepEqual(
      [
        config.model.decoder.filename,
        config.model.vocab_size,
        config.model.decoder.num_hidden_layers,
        config.model.decoder.head_size,
      ],
      [`model${suffix}.onnx`, 32000, 4, 32],
    );
    const expected = await generateJson(
      "--bundle",
      fixture.bundle,
      "--dtype",
      dtype,
      ...prompts.flatMap((p) => ["--prompt", p]),
      "--max-new-tokens",
      "8",
    );
    for (const [i, ids] of expected.prompt_ids!.entries()) {
      assert.deepEqual(await genaiReplay(out, ids, 8), expected.tokens[i], `${dtype} prompt ${i}`);
    }
  }
  // The base-only decoder, for comparison.
  const base = `${fixture.dir}/genai-base`;
  assert.equal(
    (await kvpred(
      "export",
      "--bundle",
      fixture.bundle,
      "--format",
      "genai",
      "--out",
      base,
      "--mode",
      "base",
    )).code,
    0,
  );
  const config = JSON.parse(await Deno.readTextFile(`${base}/genai_config.json`));
  assert.equal(config.model.decoder.filename, "model_base.onnx");
  const expected = await generateJson(
    "--bundle",
    fixture.bundle,
    "--mode",
    "base",
    "--prompt",
    prompts[0],
    "--max-new-tokens",
    "8",
  );
  assert.deepEqual(await genaiReplay(base, expected.prompt_ids![0], 8), expected.tokens[0]);
  // An existing folder is kept unless --force.
  const again = await kvpred(
    "export",
    "--bundle",
    fixture.bundle,
    "--format",
    "genai",
    "--out",
    base,
  );
  assert.equal(again.code, 1);
  assert.match(
    again.stderr,
    /^kvpred: .*genai-base: already exists \(use --force to replace it\)\n$/,
  );
});

/** The subset of protobuf text format config.pbtxt uses: fields, nested messages, lists. */
function parsePbtxt(text: string): Record<string, unknown> {
  const tokens = text.replace(/#.*$/gm, "").match(/"[^"]*"|[{}[\]:,]|[^\s{}[\]:,"]+/g) ?? [];
  let at = 0;
  const value = (): unknown => {
    const t = tokens[at++];
    if (t === "{") return message("}");
    if (t === "[") {
      const list: unknown[] = [];
      while (tokens[at] !== "]") {
        list.push(value());
        if (tokens[at] === ",") at++;
      }
      at++;
      return list;
    }
    if (t.startsWith('"')) return t.slice(1, -1);
    return /^-?\d+$/.test(t) ? Number(t) : t;
  };
  const message = (end?: string): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    while (at < tokens.length && tokens[at] !== end) {
      const key = tokens[at++];
      if (tokens[at] === ":") at++;
      out[key] = value();
    }
    at++;
    return out;
  };
  return message();
}

const TRITON_TYPE: Record<string, string> = { int64: "TYPE_INT64", float32: "TYPE_FP32" };

Deno.test("kvpred export --format triton: config.pbtxt matches each graph's own inputs and outputs; the data sits beside it", async () => {
  await using fixture = await trainedBundle([{ auxiliary: "q4", base: "q4" }]);
  const repo = `${fixture.dir}/triton`;
  const r = await kvpred(
    "export",
    "--bundle",
    fixture.bundle,
    "--format",
    "triton",
    "--out",
    repo,
    "--dtype",
    "q4",
    "--max-batch-size",
    "16",
  );
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual([...Deno.readDirSync(repo)].map((e) => e.name).sort(), ["tt", "tt_base"]);
  for (const [model, graph] of [["tt", "model_q4.onnx"], ["tt_base", "model_base_q4.onnx"]]) {
    const dir = `${repo}/${model}`;
    assert.deepEqual([...Deno.readDirSync(`${dir}/1`)].map((e) => e.name).sort(), [
      "model.onnx",
      "model_q4.onnx_data",
    ]);
    const config = parsePbtxt(await Deno.readTextFile(`${dir}/config.pbtxt`));
    assert.equal(config.name, model);
    assert.equal(config.backend, "onnxruntime");
    assert.equal(config.max_batch_size, 16);
    assert.deepEqual(config.dynamic_batching, {});
    assert.deepEqual(config.instance_group, [{ count: 1, kind: "KIND_CPU" }]);
    const session = await ort.InferenceSession.create(`${dir}/1/model.onnx`);
    for (
      const [list, meta] of [[config.input, session.inputMetadata], [
        config.output,
        session.outputMetadata,
      ]] as const
    ) {
      const own = meta.map((m) => {
        assert.ok(m.isTensor);
        assert.equal(m.shape[0], "batch_size", `${m.name}: the batch axis first`);
        return {
          name: m.name,
          data_type: TRITON_TYPE[m.type],
          dims: m.shape.slice(1).map((d) => typeof d === "number" ? d : -1),
        };
      });
      assert.deepEqual(list, own, `${model}: every tensor, in the graph's order`);
    }
    // Every initializer stored outside names the data file beside model.onnx.
    const proto = onnxProto.onnx.ModelProto.decode(await Deno.readFile(`${dir}/1/model.onnx`));
    const locations = new Set(
      proto.graph!.initializer!.filter((t) => t.dataLocation === 1).map((t) =>
        t.externalData!.find((e) => e.key === "location")!.value
      ),
    );
    assert.deepEqual([...locations], ["model_q4.onnx_data"]);
    // Loaded from the repository, it computes what the bundle's graph does.
    const original = await ort.InferenceSession.create(`${fixture.bundle}/onnx/${graph}`);
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor("int64", BigInt64Array.from([1n, 450n, 7483n]), [1, 3]),
      attention_mask: new ort.Tensor("int64", new BigInt64Array(3).fill(1n), [1, 3]),
    };
    for (const m of session.inputMetadata.slice(2)) {
      if (m.isTensor) {
        feeds[m.name] = new ort.Tensor("float32", new Float32Array(0), [
          1,
          m.shape[1] as number,
          0,
          32,
        ]);
      }
    }
    const [a, b] = [await session.run(feeds), await original.run(feeds)];
    assert.deepEqual(
      Array.from(a.logits.data as Float32Array),
      Array.from(b.logits.data as Float32Array),
    );
    await session.release();
    await original.release();
  }
});
