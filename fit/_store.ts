/**
 * Float32 rows per calibration window in a temporary file: window `w` holds
 * `lengths[w] × width` values at a fixed offset, read and rewritten in
 * place. The heal keeps its residual streams here as they advance layer by
 * layer, so its memory does not grow with the calibration set (the disk
 * does: 4 bytes per value).
 *
 * @example
 * ```ts
 * import { WindowStore } from "./_store.ts";
 * const dir = await Deno.makeTempDir();
 * const store = await WindowStore.create(`${dir}/s.f32`, [2, 3], 4);
 * await store.write(1, new Float32Array(12).fill(7));
 * console.log((await store.read(1))[11], (await store.read(0)).length); // 7 8
 * store.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */

/** Rows of `width` float32 values per window, on disk. */
export class WindowStore {
  readonly #offsets: number[];

  private constructor(
    private readonly file: Deno.FsFile,
    /** The file's path. */
    readonly path: string,
    /** Rows per window. */
    readonly lengths: readonly number[],
    /** Values per row. */
    readonly width: number,
  ) {
    let at = 0;
    this.#offsets = lengths.map((n) => {
      const o = at;
      at += n * width * 4;
      return o;
    });
  }

  /** Creates (or truncates) the file at `path` for windows of `lengths` rows. */
  static async create(
    path: string,
    lengths: readonly number[],
    width: number,
  ): Promise<WindowStore> {
    const file = await Deno.open(path, { read: true, write: true, create: true, truncate: true });
    return new WindowStore(file, path, lengths, width);
  }

  /** Window `w`'s rows. */
  async read(w: number): Promise<Float32Array> {
    const out = new Float32Array(this.lengths[w] * this.width);
    const bytes = new Uint8Array(out.buffer);
    await this.file.seek(this.#offsets[w], Deno.SeekMode.Start);
    let at = 0;
    while (at < bytes.length) {
      const n = await this.file.read(bytes.subarray(at));
      if (n === null) throw new Error(`${this.path}: window ${w} was never written`);
      at += n;
    }
    return out;
  }

  /** Writes window `w`'s rows (`lengths[w] × width` values). */
  async write(w: number, rows: Float32Array): Promise<void> {
    if (rows.length !== this.lengths[w] * this.width) {
      throw new RangeError(
        `window ${w}: ${rows.length} values for ${this.lengths[w]}×${this.width}`,
      );
    }
    const bytes = new Uint8Array(rows.buffer, rows.byteOffset, rows.byteLength);
    await this.file.seek(this.#offsets[w], Deno.SeekMode.Start);
    let at = 0;
    while (at < bytes.length) at += await this.file.write(bytes.subarray(at));
  }

  /** Closes the file (the caller removes it). */
  close(): void {
    this.file.close();
  }
}
