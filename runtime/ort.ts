/**
 * ONNX Runtime adapter: runs an exported bundle — prefill (an empty past
 * selects the KV-prediction entry point in `model.onnx`), decode steps and
 * greedy generation over left-padded batches — with the same interface as
 * the reference runtime, so the two can be compared token for token.
 *
 * @example
 * ```ts
 * import { OrtModel } from "./ort.ts";
 * const model = await OrtModel.load("out/tiny-bundle", { variant: "fp32" });
 * const { tokens } = await model.generate([[1, 2, 3]], { mode: "kvp", maxNewTokens: 4 });
 * console.log(tokens);
 * await model.release();
 * ```
 *
 * @module
 */

import type * as ort from "onnxruntime-node";
import { type BundleManifest, IO, type VariantEntry } from "../bundle/contract.ts";
import { findVariant, readManifest } from "../bundle/manifest.ts";
import { type Progress, verifyBundle } from "../bundle/verify.ts";
import { contextLengthOf, type KvpDescription } from "../converters/model/model.ts";
import { extendMask, padPrompts, type PromptBatch } from "./batch.ts";
import { type GenerateResult, generateWith } from "./greedy.ts";
import { defaultThreads } from "./cpu.ts";
import type { Device } from "./device.ts";
import {
  type Engine,
  type EngineSession,
  floatValues,
  type IoData,
  type IoType,
  nodeEngine,
  ortSessionOptions,
  type OrtTensor,
} from "./engine.ts";
import { mergePlacements, type Placement, placementFromProfile } from "./placement.ts";
import type { GenerateOptions, KvpRuntime, LayerCache, Mode, Step } from "./types.ts";

/**
 * The options every kvpred CPU session is created with: all graph
 * optimizations, and `threads` intra-op threads (default
 * {@link defaultThreads}: one per core).
 */
export function sessionOptions(threads?: number): ort.InferenceSession.SessionOptions {
  return ortSessionOptions("cpu", threads ?? defaultThreads());
}

/** The engine running `device`: onnxruntime-node (cpu, webgpu) or onnxruntime-web (webgpu-web). */
export async function engineFor(device: Device): Promise<Engine> {
  if (device === "webgpu-web") return (await import("./ort_web.ts")).webEngine();
  return nodeEngine(device);
}

/** Options for {@link OrtModel.load}. */
export interface OrtLoadOptions {
  /** The precision variant to run (default "fp32"; see the manifest's `variants`). */
  variant?: string;
  /**
   * Check the bundle's files against the manifest first (default true):
   * `true` re-hashes the files changed since the last successful check
   * (bundle/verify.ts), `"full"` every file, `false` none.
   */
  verify?: boolean | "full";
  /** Stops the integrity check (it rejects with the signal's reason). */
  signal?: AbortSignal;
  /** Intra-op threads (default {@link defaultThreads}: one per core). */
  threads?: number;
  /** Where the graphs run (default "cpu"; see runtime/device.ts). */
  device?: Device;
  /**
   * Record where ONNX Runtime places each node and which WebGPU program it
   * runs (its profiler), read with {@link OrtModel.placement} (default false).
   */
  profile?: boolean;
  /** Runs on the description before the bundle is verified or loaded. */
  check?: (description: KvpDescription) => void;
  /** Progress of the integrity check (bytes hashed). */
  onVerifyProgress?: Progress;
  /**
   * Sees every output of every run, the cache and logits and any other
   * output a graph has (a validator's tapped graphs expose intermediates).
   *
   * @internal ONNX Runtime tensors, which kvpred does not re-export.
   */
  onOutputs?: (mode: Mode, outputs: Record<string, ort.Tensor>) => void;
  /**
   * Decode in place where the graph allows it (default true): on the CPU,
   * in a fused bundle's float32 variants (GroupQueryAttention reads the past
   * input itself), the cache is held with room for more tokens and each
   * decode step's new keys and values are written into that room, rather
   * than the whole cache returned by every step ({@link OrtModel.inPlace},
   * {@link CacheUpdate}). The tokens and logits are the same
   * (tests/inplace_test.ts); `false` runs every step as transformers.js does.
   */
  inPlace?: boolean;
}

/**
 * A prefill's or decode step's result: the cache held as ONNX Runtime
 * tensors `[batch, kv heads, room, head dim]`, of which the first
 * `mask.length / batch` columns are the cache (an in-place decode keeps room
 * for more; {@link OrtModel.inPlace}).
 */
export interface OrtStep extends Step {
  /**
   * `present.*` of the last run, key and value per layer, in that order.
   *
   * @internal ONNX Runtime tensors, passed back to the next step as they are.
   */
  past: ort.Tensor[];
}

/**
 * How a decode step updates the cache ({@link OrtModel.cacheUpdate}):
 * - `append`: the runtime holds the cache with room; a step fetches the
 *   logits and the new tokens' own keys and values (`appended.*`) and writes
 *   them into the room, while the graph's `present.*` stay inside ONNX
 *   Runtime (onnxruntime-node 1.30 would return each as a new copy of the
 *   whole cache, bound to a buffer or not);
 * - `copy`: each step returns the whole new cache, as for transformers.js.
 */
export type CacheUpdate = "append" | "copy";

/** The cache outputs a run of each {@link CacheUpdate} reads, key and value per layer. */
const _CACHE_OUTPUTS: Readonly<
  Record<CacheUpdate, readonly [(i: number) => string, (i: number) => string]>
> = {
  copy: [IO.presentKey, IO.presentValue],
  append: [IO.appendedKey, IO.appendedValue],
};

/**
 * The columns an in-place decode allocates for a cache that must hold
 * `needed`: `needed` and a sixteenth more (at least 16), so the cache is
 * copied into a larger buffer once every `needed / 16` steps while the room
 * stays within a sixteenth of the cache (ONNX Runtime reads it as past
 * columns, masked); never past the context length where `needed` fits in it.
 */
export function cacheRoom(needed: number, contextLength: number): number {
  const room = needed + Math.max(16, Math.ceil(needed / 16));
  return needed <= contextLength ? Math.min(room, contextLength) : room;
}

/** An exported bundle, run by ONNX Runtime. */
export class OrtModel implements KvpRuntime<OrtStep> {
  private sessions = new Map<Mode, EngineSession>();
  private profiles: Placement[] = [];
  /**
   * The cache buffers an appending decode writes into: the columns written
   * so far (a state may append only where it ends, so a state decoded from
   * twice never has its child's columns overwritten) and the live states
   * that read them (freed when the last one is disposed).
   */
  private rooms = new WeakMap<ArrayBufferLike, { written: number; users: number }>();

  /** Intra-op threads of its sessions. */
  get threads(): number {
    return this.options.threads ?? defaultThreads();
  }

  private constructor(
    readonly dir: string,
    readonly manifest: BundleManifest,
    /** The variant this model runs. */
    readonly variant: VariantEntry,
    /** The ONNX Runtime package and device that run it. */
    readonly engine: Engine,
    private readonly options: OrtLoadOptions,
  ) {}

  /** Opens a bundle's variant (sessions are created on first use). */
  static async load(dir: string, options: OrtLoadOptions = {}): Promise<OrtModel> {
    const manifest = await readManifest(dir);
    const variant = findVariant(manifest, options.variant ?? "fp32");
    options.check?.(manifest.model);
    const verify = options.verify ?? true;
    if (verify) {
      await verifyBundle(dir, manifest, {
        full: verify === "full",
        onProgress: options.onVerifyProgress,
        signal: options.signal,
      });
    }
    const engine = await engineFor(options.device ?? "cpu");
    return new OrtModel(dir, manifest, variant, engine, options);
  }

  /** The model description recorded at export. */
  get description(): KvpDescription {
    return this.manifest.model;
  }

  /** The device its graphs run on. */
  get device(): Device {
    return this.engine.device;
  }

  /** Creates the session of `mode`'s graph. */
  async prepare(mode: Mode): Promise<void> {
    await this.session(mode);
  }

  /**
   * The session of one graph: `kvp` (model{s}.onnx) or `base` (model_base{s}.onnx).
   *
   * @internal Returns kvpred's engine session over an ONNX Runtime session.
   */
  async session(mode: Mode): Promise<EngineSession> {
    let s = this.sessions.get(mode);
    if (!s) {
      s = await this.engine.create(`${this.dir}/${this.variant.graphs[mode].file}`, {
        threads: this.threads,
        profile: this.options.profile,
        externalData: [`${this.dir}/${this.variant.externalData}`],
      });
      this.sessions.set(mode, s);
    }
    return s;
  }

  /** Validates and left-pads prompts for this model's vocabulary. */
  batch(prompts: readonly number[][]): PromptBatch {
    return padPrompts(prompts, this.description.base.vocabSize);
  }

  /**
   * Whether decode steps may run in place (the {@link OrtLoadOptions.inPlace}
   * option, on the CPU, in the fused form's float32 variants): the cache is
   * held with room for the new tokens, and each step writes them into it
   * ({@link OrtModel.cacheUpdate} says whether a graph does). A state is
   * never changed where it is read: the next one shares its buffers and
   * writes only past its length, and a state decoded from again moves to
   * new buffers.
   */
  inPlace(): boolean {
    return this.options.inPlace !== false && this.engine.device === "cpu" &&
      this.manifest.attention === "fused" && this.variant.cacheType === "float32";
  }

  /**
   * How `mode`'s decode steps update the cache: `append` where
   * {@link OrtModel.inPlace} and the graph outputs the new keys and values
   * (fused bundles written before it did decode by copying), else `copy`.
   */
  async cacheUpdate(mode: Mode): Promise<CacheUpdate> {
    if (!this.inPlace()) return "copy";
    const outputs = (await this.session(mode)).outputs;
    return outputs.includes(IO.appendedKey(0)) ? "append" : "copy";
  }

  /**
   * One run of `mode`'s graph: feeds, outputs, and the cache outputs that
   * `update` reads ({@link CacheUpdate}), key and value per layer: the
   * present cache for `copy`, the new keys and values for `append`.
   */
  private async run(
    mode: Mode,
    ids: BigInt64Array,
    seq: number,
    state: { batch: number; past: ort.Tensor[] },
    mask: Uint8Array,
    update: CacheUpdate = "copy",
  ): Promise<{ logits: Float32Array; cache: ort.Tensor[] }> {
    const { batch } = state;
    const { base } = this.description;
    const feeds: Record<string, ort.Tensor> = {
      [IO.inputIds]: this.engine.tensor("int64", ids, [batch, seq]),
      [IO.attentionMask]: this.engine.tensor("int64", BigInt64Array.from(mask, BigInt), [
        batch,
        mask.length / batch,
      ]),
    };
    for (let i = 0; i < base.numLayers; i++) {
      feeds[IO.pastKey(i)] = state.past[2 * i];
      feeds[IO.pastValue(i)] = state.past[2 * i + 1];
    }
    // Every output (a validator's tapped graphs have more) but the other update's
    // cache outputs: the present where the runtime holds the cache, else the
    // appended ones (at a prefill, as long as the cache).
    const names = (u: CacheUpdate) =>
      Array.from({ length: base.numLayers }, (_, i) => _CACHE_OUTPUTS[u].map((f) => f(i))).flat();
    const skip = new Set(names(update === "append" ? "copy" : "append"));
    const session = await this.session(mode);
    const fetches: Record<string, ort.Tensor | null> = Object.fromEntries(
      session.outputs.filter((name) => !skip.has(name)).map((name) => [name, null]),
    );
    const out = await session.run(feeds, fetches);
    this.options.onOutputs?.(mode, out);
    return { logits: floatValues(out[IO.logits]), cache: names(update).map((name) => out[name]) };
  }

  /** The element type of the graph's cache inputs (float16 in the f16 variants). */
  async cacheType(mode: Mode): Promise<IoType> {
    const info = (await this.session(mode)).inputs.find((i) => i.name === IO.pastKey(0));
    return info?.type === "float16" ? "float16" : "float32";
  }

  /** Prefill of a padded batch through the `kvp` or `base` graph (empty past). */
  async prefill(input: PromptBatch, mode: Mode): Promise<OrtStep> {
    const { base } = this.description;
    const type = await this.cacheType(mode);
    const past = base.numKvHeads.flatMap((k) => {
      const empty = this.engine.tensor(type, emptyData(type), [input.batch, k, 0, base.headDim]);
      return [empty, empty];
    });
    const { logits, cache } = await this.run(
      mode,
      BigInt64Array.from(input.ids, BigInt),
      input.width,
      { batch: input.batch, past },
      input.mask,
    );
    return { batch: input.batch, mask: input.mask, past: cache, logits };
  }

  /** Appends `tokens` (`[batch, seq]`) to the cache; `mode` picks the graph that runs it. */
  async decode(
    state: OrtStep,
    tokens: Int32Array,
    seq = 1,
    mode: Mode = "kvp",
  ): Promise<OrtStep> {
    const mask = extendMask(state.mask, state.batch, tokens, seq, this.description.base.vocabSize);
    const ids = BigInt64Array.from(tokens, BigInt);
    const update = await this.cacheUpdate(mode);
    if (update === "copy") {
      const { logits, cache } = await this.run(mode, ids, seq, state, mask);
      return { batch: state.batch, mask, past: cache, logits };
    }
    const length = state.mask.length / state.batch, needed = length + seq;
    // The state's room, where it has enough and ends where the room was written.
    const ends = state.past.every((t) => this.rooms.get(_buffer(t))?.written === length);
    let past = state.past;
    if (!ends || past[0].dims[2] < needed) {
      // The cache moves to new buffers with room, which the next states share.
      past = _withRoom(
        this.engine,
        past,
        length,
        cacheRoom(needed, contextLengthOf(this.description)),
      );
      for (const t of past) this.rooms.set(_buffer(t), { written: length, users: 0 });
    }
    const run = await this.run(mode, ids, seq, { batch: state.batch, past }, mask, "append");
    run.cache.forEach((fresh, j) => _appendColumns(past[j], fresh, length));
    for (const t of past) {
      const room = this.rooms.get(_buffer(t))!;
      room.written = needed;
      room.users++;
    }
    return { batch: state.batch, mask, past, logits: run.logits };
  }

  /**
   * The rows `rows` of a state, in that order (a server drops finished
   * requests this way); leading cache columns that are padding in every kept
   * row are trimmed.
   */
  selectRows(state: OrtStep, rows: readonly number[]): OrtStep {
    return gatherRows(this.engine, [state], rows.map((row) => [0, row]));
  }

  /**
   * Several states as one batch, their rows in order: shorter caches are
   * left-padded (zeros, mask 0) to the longest. Positions come from the mask
   * (SPEC §5), so every row decodes as it would alone.
   */
  concatRows(states: readonly OrtStep[]): OrtStep {
    return gatherRows(
      this.engine,
      states,
      states.flatMap((s, i) => Array.from({ length: s.batch }, (_, row) => [i, row] as const)),
    );
  }

  /** Greedy generation; `mode` picks the graph (KV prediction or base-only). */
  generate(prompts: readonly number[][], options: GenerateOptions = {}): Promise<GenerateResult> {
    return generateWith(this, prompts, options);
  }

  /**
   * Frees a state's cache and logits now: their buffers are detached, so the
   * memory is back with the allocator before the next step asks for as much
   * (left to the garbage collector, every decode step writes its whole cache
   * into fresh pages, and on a virtual machine each first touch of a page is
   * slow: README, "Freeing decoded-from states"). Nothing is freed while an
   * `onOutputs` hook is set: it may hold the outputs.
   */
  dispose(state: OrtStep): void {
    if (this.options.onOutputs) return;
    for (const t of state.past) {
      // An appending decode's buffers go with the last state that reads them.
      const room = this.rooms.get(_buffer(t));
      if (room && --room.users > 0) continue;
      _detach(t.data);
    }
    _detach(state.logits);
  }

  /** The cache of a state as float32 arrays, per layer (float16 caches converted exactly). */
  cache(state: OrtStep): LayerCache[] {
    const out: LayerCache[] = [];
    const length = state.mask.length / state.batch;
    const values = (t: ort.Tensor) =>
      floatValues(t.dims[2] === length ? t : _withRoom(this.engine, [t], length, length)[0]);
    for (let i = 0; i < state.past.length; i += 2) {
      out.push({ key: values(state.past[i]), value: values(state.past[i + 1]), length });
    }
    return out;
  }

  /**
   * Where ONNX Runtime placed the nodes that ran so far, and the WebGPU
   * programs they ran (with `profile`; empty otherwise). Open sessions stop
   * profiling; their later runs are not recorded.
   */
  async placement(): Promise<Placement> {
    for (const s of this.sessions.values()) {
      this.profiles.push(placementFromProfile(await s.endProfiling()));
    }
    return mergePlacements(this.profiles);
  }

  /** Releases the sessions. */
  async release(): Promise<void> {
    for (const mode of [...this.sessions.keys()]) await this.releaseSession(mode);
  }

  /**
   * Releases the session of one graph. Each session holds its own copy of
   * the weights it reads (the base's are in both graphs), so running the
   * modes one after the other with this in between halves peak memory.
   */
  async releaseSession(mode: Mode): Promise<void> {
    const s = this.sessions.get(mode);
    if (!s) return;
    this.sessions.delete(mode);
    this.profiles.push(placementFromProfile(await s.endProfiling()));
    await s.release();
  }
}

/** A zero-length typed array of an element type. */
function emptyData(type: IoType): IoData {
  return type === "float16"
    ? new Uint16Array(0)
    : type === "int64"
    ? new BigInt64Array(0)
    : new Float32Array(0);
}

/** A tensor's data as its typed array (float16 as Uint16Array bits). */
function typedData(t: OrtTensor): Float32Array | Uint16Array {
  if (t.type === "float32") return t.data as Float32Array;
  const d = t.data as ArrayBufferView;
  return new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2);
}

/**
 * Rows picked from states (`[state, row]`), right-aligned in one new state:
 * the cache is as long as the longest kept row's real span (from its first
 * mask-1 column), shorter rows left-padded with zeros and mask 0.
 */
function gatherRows(
  engine: Engine,
  states: readonly OrtStep[],
  picks: readonly (readonly [number, number])[],
): OrtStep {
  const width = (s: OrtStep) => s.mask.length / s.batch;
  const span = ([i, row]: readonly [number, number]) => {
    const s = states[i], w = width(s);
    const first = s.mask.subarray(row * w, (row + 1) * w).indexOf(1);
    return first < 0 ? 0 : w - first;
  };
  const total = Math.max(0, ...picks.map(span));
  const batch = picks.length;
  const mask = new Uint8Array(batch * total);
  const vocab = states[0].logits.length / states[0].batch;
  const logits = new Float32Array(batch * vocab);
  picks.forEach(([i, row], b) => {
    const s = states[i], w = width(s), c = Math.min(total, w);
    mask.set(s.mask.subarray((row + 1) * w - c, (row + 1) * w), (b + 1) * total - c);
    logits.set(s.logits.subarray(row * vocab, (row + 1) * vocab), b * vocab);
  });
  const past = states[0].past.map((first, t) => {
    const [, heads, , headDim] = first.dims;
    const type: IoType = first.type === "float16" ? "float16" : "float32";
    const size = batch * heads * total * headDim;
    const data = type === "float16" ? new Uint16Array(size) : new Float32Array(size);
    picks.forEach(([i, row], b) => {
      // The cache is the first w of `room` columns (an in-place decode's room after them).
      const src = states[i].past[t], w = width(states[i]), room = src.dims[2];
      const c = Math.min(total, w);
      const from = typedData(src);
      for (let h = 0; h < heads; h++) {
        const at = ((row * heads + h) * room + w - c) * headDim;
        data.set(
          from.subarray(at, at + c * headDim),
          ((b * heads + h) * total + total - c) * headDim,
        );
      }
    });
    return engine.tensor(type, data, [batch, heads, total, headDim]);
  });
  return { batch, mask, past, logits };
}

/**
 * The first `length` columns of each cache tensor `[B, kv, T, hd]` copied
 * into a new one of `room` columns (the rest zero).
 */
function _withRoom(
  engine: Engine,
  past: readonly ort.Tensor[],
  length: number,
  room: number,
): ort.Tensor[] {
  return past.map((t) => {
    const [batch, heads, columns, headDim] = t.dims;
    const from = typedData(t);
    const size = batch * heads * room * headDim;
    const data = t.type === "float16" ? new Uint16Array(size) : new Float32Array(size);
    for (let r = 0; r < batch * heads; r++) {
      data.set(
        from.subarray(r * columns * headDim, (r * columns + length) * headDim),
        r * room * headDim,
      );
    }
    return engine.tensor(t.type === "float16" ? "float16" : "float32", data, [
      batch,
      heads,
      room,
      headDim,
    ]);
  });
}

/** The buffer behind a tensor's data. */
function _buffer(t: OrtTensor): ArrayBufferLike {
  return (t.data as ArrayBufferView).buffer;
}

/**
 * Writes a run's new entries `fresh` `[B, S, k, hd]` into a cache held with
 * room, `cache` `[B, k, room, hd]`, at columns `at`…`at + S − 1`.
 */
function _appendColumns(cache: OrtTensor, fresh: OrtTensor, at: number): void {
  const [batch, heads, room, headDim] = cache.dims;
  const seq = fresh.dims[1];
  const to = cache.data as Float32Array, from = fresh.data as Float32Array;
  for (let b = 0; b < batch; b++) {
    for (let s = 0; s < seq; s++) {
      for (let h = 0; h < heads; h++) {
        const src = ((b * seq + s) * heads + h) * headDim;
        to.set(from.subarray(src, src + headDim), ((b * heads + h) * room + at + s) * headDim);
      }
    }
  }
}

/** Detaches the buffer behind `data` where `data` is the whole of it (an output's own buffer). */
function _detach(data: unknown): void {
  if (!ArrayBuffer.isView(data)) return;
  const buffer = data.buffer;
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength === 0) return;
  if (data.byteOffset !== 0 || data.byteLength !== buffer.byteLength) return;
  buffer.transfer(0);
}
