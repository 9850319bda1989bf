/**
 * Writes a variant's external data file: every initializer of a weight
 * layout at its aligned offset, streamed one tensor at a time from the
 * checkpoint (transposed or quantized where the plan says), hashed while
 * written.
 *
 * @example
 * ```ts
 * import { writeWeights } from "./_data.ts";
 * import { layoutWeights } from "./weights.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.remove(path);
 * await writeWeights(async (_s, out) => out, layoutWeights([], "x"), path, () => {});
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { QUANT_OPS } from "../converters/model/precision.ts";
import { quantizeRows, usesHessian } from "../converters/model/quant.ts";
import { writeAll } from "../converters/formats/safetensors_write.ts";
import { packDynamicInt8, packMatMulNBits } from "./_pack.ts";
import { storedTensors, type WeightLayout, type WeightSpec } from "./weights.ts";

/**
 * `x` `[rows, cols]` row-major into `out` as `[cols, rows]`, in 32 × 32 tiles
 * whose inner loop writes `out` contiguously (about 2 GB/s here, against 0.3
 * for an element-by-element tile: the float32 weights' transposes were most
 * of the time `agree` and `fit` spend writing their models).
 */
export function transpose(
  x: Float32Array,
  rows: number,
  cols: number,
  out: Float32Array = new Float32Array(rows * cols),
): Float32Array {
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let c = c0; c < c1; c++) {
        for (let r = r0, o = c * rows + r0, i = r0 * cols + c; r < r1; r++, o++, i += cols) {
          out[o] = x[i];
        }
      }
    }
  }
  return out;
}

/** A file written sequentially while its sha256 is computed. */
class HashingWriter {
  private readonly hash;
  position = 0;
  constructor(private readonly file: Deno.FsFile, hashing: boolean) {
    this.hash = hashing ? createHash("sha256") : undefined;
  }

  async write(bytes: Uint8Array): Promise<void> {
    await writeAll(this.file, bytes);
    this.hash?.update(bytes);
    this.position += bytes.length;
  }

  /** Writes zeros up to `offset`. */
  async padTo(offset: number): Promise<void> {
    if (offset > this.position) await this.write(new Uint8Array(offset - this.position));
  }

  digest(): string {
    return this.hash?.digest("hex") ?? "";
  }
}

const bytesOf = (a: Float32Array | Uint8Array | Int8Array | Float16Array) =>
  new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** float32 values as the bytes of the stored type (float16: each rounded to nearest, ties to even). */
function floatBytes(a: Float32Array, type: "float32" | "float16" | undefined): Uint8Array {
  return type === "float16" ? bytesOf(new Float16Array(a)) : bytesOf(a);
}

/** Options of {@link writeWeights}. */
export interface WriteWeightsOptions {
  /** Stops the writing between tensors. */
  signal?: AbortSignal;
  /** Calibration Hessians by source tensor: 4-bit weights by GPTQ (`convert --calibration-ids`). */
  hessians?: ReadonlyMap<string, Float64Array>;
  /** Compute the file's sha256 (default true; false: the result is ""). */
  hash?: boolean;
}

/**
 * Streams every initializer of a variant into its data file at its aligned
 * offset, through two reusable buffers of the largest tensor's size (memory
 * stays flat however large the checkpoint), quantizing where the plan says.
 * Returns the file's sha256, computed while writing.
 */
export async function writeWeights(
  read: (source: string, out: Float32Array) => Promise<Float32Array>,
  layout: WeightLayout,
  path: string,
  onWritten: (bytes: number) => void,
  options: WriteWeightsOptions = {},
): Promise<string> {
  const { signal, hessians, hash = true } = options;
  using file = await Deno.open(path, { write: true, createNew: true });
  const out = new HashingWriter(file, hash);
  const size = (s: WeightSpec) => s.sourceDims.reduce((a, b) => a * b, 1);
  const largest = Math.max(...layout.specs.map(size));
  const readBuf = new Float32Array(largest), transposeBuf = new Float32Array(largest);
  for (const spec of layout.specs) {
    signal?.throwIfAborted();
    const data = await read(spec.source, readBuf.subarray(0, size(spec)));
    const [rows, cols] = spec.sourceDims;
    let pieces: Uint8Array[];
    if (spec.quant && QUANT_OPS[spec.quant.op].weights === "int8") {
      const packed = packDynamicInt8(quantizeRows(data, rows, cols, spec.quant));
      pieces = [bytesOf(packed.weights), bytesOf(packed.scales)];
    } else if (spec.quant) {
      // With calibration Hessians (convert --calibration-ids), 4-bit weights by GPTQ.
      const hessian = usesHessian(spec.quant) ? hessians?.get(spec.source) : undefined;
      const packed = packMatMulNBits(quantizeRows(data, rows, cols, spec.quant, { hessian }));
      pieces = [bytesOf(packed.codes), floatBytes(packed.scales, spec.type)];
      if (!spec.quant.symmetric) pieces.push(packed.zeroPoints);
    } else {
      const stored = spec.transpose
        ? transpose(data, rows, cols, transposeBuf.subarray(0, data.length))
        : data;
      pieces = [floatBytes(stored, spec.type)];
    }
    const tensors = storedTensors(spec);
    for (let i = 0; i < tensors.length; i++) {
      const ref = layout.refs.get(tensors[i].name)!;
      if (pieces[i].length !== ref.length) {
        throw new Error(`${tensors[i].name}: ${pieces[i].length} bytes, layout says ${ref.length}`);
      }
      await out.padTo(ref.offset);
      await out.write(pieces[i]);
      onWritten(ref.length);
    }
  }
  return out.digest();
}

/** Progress and cancellation of {@link writeModelFiles}. */
export interface ModelFilesOptions {
  /** Called as weights are written: bytes so far, bytes in all. */
  onProgress?: (written: number, total: number) => void;
  /** Stops the writing between tensors (the caller removes what was written). */
  signal?: AbortSignal;
}

/**
 * Writes a float32 model of one's own (not a bundle variant): its weights
 * into `path_data` by {@link writeWeights}, then the graph `build` makes over
 * them into `path`.
 */
export async function writeModelFiles(
  read: (source: string, out: Float32Array) => Promise<Float32Array>,
  layout: WeightLayout,
  path: string,
  build: () => Uint8Array,
  options: ModelFilesOptions = {},
): Promise<void> {
  let written = 0;
  await writeWeights(
    read,
    layout,
    `${path}_data`,
    (n) => options.onProgress?.(written += n, layout.totalBytes),
    { signal: options.signal, hash: false },
  );
  await Deno.writeFile(path, build());
}
