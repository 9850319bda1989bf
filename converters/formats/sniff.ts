/**
 * Format sniffing in one place: what a file's first bytes announce
 * (safetensors, a torch.save zip, a raw pickle), and the errors that send a
 * file given to the wrong reader to the right one — a raw pickle is never
 * read, only refused with the command that re-saves it.
 *
 * @example
 * ```ts
 * import { detectFormat } from "./sniff.ts";
 * console.log(detectFormat(new Uint8Array([0x50, 0x4b, 3, 4]))); // "torch"
 * console.log(detectFormat(new Uint8Array([0x80, 2, 0x8a, 0x0a]))); // "pickle"
 * ```
 *
 * @module
 */

import { CheckpointError } from "../errors.ts";
import type { ByteSource } from "./_source.ts";
import { readExactly } from "./_zip.ts";

/** The format a file's first bytes announce. */
export type TensorFileFormat = "safetensors" | "torch" | "pickle";

/**
 * Tells the formats apart by magic bytes: a zip's local file header (or an
 * empty zip's end record) → torch, a pickle protocol 2–5 opcode → raw
 * pickle, anything else → safetensors (whose reader validates the rest).
 */
export function detectFormat(first: Uint8Array): TensorFileFormat {
  const pk = first[0] === 0x50 && first[1] === 0x4b;
  if (pk && ((first[2] === 3 && first[3] === 4) || (first[2] === 5 && first[3] === 6))) {
    return "torch";
  }
  if (first[0] === 0x80 && first[1] >= 2 && first[1] <= 5) return "pickle";
  return "safetensors";
}

/** The error for a raw (non-zip) pickle: legacy torch.save output or pickle.dump. */
export function rawPickleError(path: string, first: Uint8Array): CheckpointError {
  const legacy = [0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]
    .every((b, i) => first[2 + i] === b);
  const what = legacy
    ? "a legacy (pre-1.6, non-zip) torch.save checkpoint"
    : "a raw pickle, not a torch.save zip";
  return new CheckpointError(
    `${path}: ${what}; kvpred never unpickles raw pickles. Re-save it where you trust it: ` +
      `python -c "import torch; torch.save(torch.load('${path}', weights_only=True), 'model.pt', ` +
      `_use_new_zipfile_serialization=True)" (or convert it to safetensors)`,
  );
}

/**
 * Refuses what is not safetensors but a PyTorch file given to the safetensors
 * reader: a torch.save zip (read those with `openTensorFile` or `TorchFile`),
 * or a raw pickle (never read).
 */
export async function refuseNotSafetensors(
  path: string,
  source: ByteSource,
  first: Uint8Array,
): Promise<void> {
  const format = detectFormat(first);
  if (format === "pickle") {
    throw rawPickleError(path, await readExactly(source, path, 0, Math.min(source.size, 16)));
  }
  if (format === "torch") {
    throw new CheckpointError(
      `${path}: this is a PyTorch zip (torch.save) checkpoint, not safetensors; ` +
        "open it with openTensorFile (converters/formats/open.ts), which never unpickles",
    );
  }
}
