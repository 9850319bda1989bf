/**
 * What CPU a measurement ran on: its model name and the instruction-set
 * features that decide int8 and float speed (AVX-512, VNNI, AMX). Printed
 * with every benchmark, since the machine may change between runs.
 *
 * @example
 * ```ts
 * import { cpuInfo } from "./cpu.ts";
 * const cpu = await cpuInfo();
 * console.log(cpu.model, cpu.int8Features);
 * ```
 *
 * @module
 */

/** The CPU a benchmark ran on. */
export interface CpuInfo {
  /** "model name" from /proc/cpuinfo (or the OS's name when unavailable). */
  model: string;
  /** Logical cores. */
  cores: number;
  /** Float SIMD features present: avx2, avx512f, avx512_bf16, avx512_fp16. */
  floatFeatures: string[];
  /** int8 dot-product features present: avx_vnni, avx512_vnni, amx_int8, amx_tile. */
  int8Features: string[];
}

const FLOAT = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16"];
const INT8 = ["avx_vnni", "avx512_vnni", "amx_tile", "amx_int8"];

/**
 * ONNX Runtime's intra-op threads when none are asked for: one per core this
 * process may use. (Left to itself, ONNX Runtime 1.30 under Deno runs a
 * session on one thread here, half the speed on two cores.)
 */
export function defaultThreads(): number {
  return Math.max(1, navigator.hardwareConcurrency || 1);
}

/** Reads /proc/cpuinfo (Linux); elsewhere only the core count is known. */
export async function cpuInfo(): Promise<CpuInfo> {
  let text = "";
  let why: string = Deno.build.os;
  try {
    text = await Deno.readTextFile("/proc/cpuinfo");
  } catch (e) {
    // Not Linux, or Deno's permissions: /proc needs --allow-all.
    if (e instanceof Deno.errors.NotCapable) why = "unknown (reading /proc/cpuinfo needs -A)";
  }
  const model = /^model name\s*:\s*(.+)$/m.exec(text)?.[1]?.trim() ?? why;
  const flags = new Set((/^flags\s*:\s*(.+)$/m.exec(text)?.[1] ?? "").split(/\s+/));
  return {
    model,
    cores: navigator.hardwareConcurrency,
    floatFeatures: FLOAT.filter((f) => flags.has(f)),
    int8Features: INT8.filter((f) => flags.has(f)),
  };
}
