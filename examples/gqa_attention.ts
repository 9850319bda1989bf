/**
 * One-off check (not part of the tests): ONNX Runtime's CPU
 * `GroupQueryAttention` (com.microsoft; `do_rotary = 0`, `scale = 1` on
 * pre-scaled queries, `seqlens_k = total − 1` for every row, the
 * left-padding and causal mask as a finite `attention_bias`) against
 * kvpred's plain attention (graphs/_layers.ts `paddingInvariantAttention`)
 * and a float64 reference, on one layer's left-padded batch: the error of
 * each, whether a row's result is the same alone and left-padded in a batch
 * (prefill and one decode step), and with a prompt length as second argument
 * the time of one layer's attention at that length, prefill and decode step.
 * Environment L0 and L1 set the two rows' lengths (default 5 and 9).
 *
 * ```sh
 * L0=37 L1=130 deno run -A examples/gqa_attention.ts 16,4,64   # heads, KV heads, head dim
 * deno run -A examples/gqa_attention.ts 16,4,64 2048              # timing at 2048 tokens
 * ```
 *
 * @module
 */
import * as ort from "onnxruntime-node";
import { encodeModel, GraphBuilder } from "../graphs/builder.ts";
import { paddingInvariantAttention } from "../graphs/_layers.ts";

const [nq, kv, hd] = (Deno.args[0] ?? "12,3,64").split(",").map(Number);
const speedS = Number(Deno.args[1] ?? 0);
const g = nq / kv;

function plainModel(): Uint8Array {
  const b = new GraphBuilder("plain");
  const q = b.input("q", "float32", ["B", kv, "GS", hd]);
  const k = b.input("k", "float32", ["B", kv, "T", hd]);
  const v = b.input("v", "float32", ["B", kv, "T", hd]);
  const bias = b.input("bias", "float32", ["B", 1, 1, "S", "T"]);
  const y = paddingInvariantAttention(b, q, k, v, bias, g, hd);
  b.output(y, "float32", ["B", kv, g, "S", hd], "y");
  return encodeModel(b.model());
}

function gqaModel(): Uint8Array {
  const b = new GraphBuilder("gqa");
  const q = b.input("q", "float32", ["B", "S", nq * hd]);
  const k = b.input("k", "float32", ["B", "S", kv * hd]);
  const v = b.input("v", "float32", ["B", "S", kv * hd]);
  const pk = b.input("pk", "float32", ["B", kv, "P", hd]);
  const pv = b.input("pv", "float32", ["B", kv, "P", hd]);
  const seqlens = b.op("Cast", [b.input("seqlens", "int64", ["B"])], { to: 6 });
  const total = b.op("Cast", [b.input("total", "int64", [])], { to: 6 });
  const bias = b.input("bias", "float32", ["B", 1, "S", "T"]);
  const outs = b.opN(
    "GroupQueryAttention",
    [q, k, v, pk, pv, seqlens, total, "", "", "", bias],
    3,
    { num_heads: nq, kv_num_heads: kv, scale: { float: 1 }, do_rotary: 0 },
    undefined,
    ["y", "pk_out", "pv_out"],
    "com.microsoft",
  );
  b.output(outs[0], "float32", ["B", "S", nq * hd]);
  b.output(outs[1], "float32", ["B", kv, "T", hd]);
  b.output(outs[2], "float32", ["B", kv, "T", hd]);
  return encodeModel(b.model());
}

let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;

// Per row r: lengths[r] real tokens, left-padded to W = max; past P (decode) or 0 (prefill).
interface Case {
  B: number;
  S: number;
  P: number;
  T: number;
  qh: Float32Array[]; // per (row, head) [S, hd] queries (pre-scaled), index r*nq+h
  kh: Float32Array[]; // per (row, kv head) [T, hd] all keys (past + new)
  vh: Float32Array[];
  mask: number[][]; // [B][T] 1 real / 0 pad
}

function makeCase(
  rows: { len: number; data: { q: Float32Array[]; k: Float32Array[]; v: Float32Array[] } }[],
  S: number,
  P: number,
): Case {
  const B = rows.length, T = P + S;
  const c: Case = { B, S, P, T, qh: [], kh: [], vh: [], mask: [] };
  for (const r of rows) {
    const padN = T - r.len; // real tokens are the last r.len of T
    c.mask.push(Array.from({ length: T }, (_, t) => (t >= padN ? 1 : 0)));
    for (let h = 0; h < nq; h++) {
      const a = new Float32Array(S * hd);
      // queries: the last S positions; row's real queries are its last min(S, len)
      const src = r.data.q[h]; // [len, hd] real queries of the last positions
      const realS = Math.min(S, r.len);
      a.set(src.subarray((r.len - realS) * hd, r.len * hd), (S - realS) * hd);
      c.qh.push(a);
    }
    for (let h = 0; h < kv; h++) {
      for (const [from, to] of [[r.data.k, c.kh], [r.data.v, c.vh]] as const) {
        const a = new Float32Array(T * hd);
        a.set(from[h].subarray(0, r.len * hd), padN * hd);
        to.push(a);
      }
    }
  }
  return c;
}

function rowData(len: number) {
  const mk = (n: number, scale = 1) =>
    Array.from({ length: n }, () => Float32Array.from({ length: len * hd }, () => rnd() * scale));
  return { q: mk(nq, 1 / Math.sqrt(hd) * 3), k: mk(kv, 3), v: mk(kv) };
}

const NEG = -3.4028234663852886e38; // finite, what a float mask uses
function biasData(c: Case): Float32Array {
  const out = new Float32Array(c.B * c.S * c.T);
  for (let b = 0; b < c.B; b++) {
    for (let s = 0; s < c.S; s++) {
      for (let t = 0; t < c.T; t++) {
        const causal = t <= c.P + s;
        out[(b * c.S + s) * c.T + t] = causal && c.mask[b][t] ? 0 : NEG;
      }
    }
  }
  return out;
}

async function runPlain(sess: ort.InferenceSession, c: Case): Promise<Float32Array> {
  const { B, S, T } = c;
  const q = new Float32Array(B * kv * g * S * hd);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nq; h++) q.set(c.qh[b * nq + h], ((b * nq + h) * S) * hd);
  }
  const k = new Float32Array(B * kv * T * hd), v = new Float32Array(B * kv * T * hd);
  for (let i = 0; i < B * kv; i++) {
    k.set(c.kh[i], i * T * hd);
    v.set(c.vh[i], i * T * hd);
  }
  const out = await sess.run({
    q: new ort.Tensor("float32", q, [B, kv, g * S, hd]),
    k: new ort.Tensor("float32", k, [B, kv, T, hd]),
    v: new ort.Tensor("float32", v, [B, kv, T, hd]),
    bias: new ort.Tensor("float32", biasData(c), [B, 1, 1, S, T]),
  });
  return out.y.data as Float32Array; // [B, kv, g, S, hd] = [B, nq, S, hd]
}

async function runGqa(sess: ort.InferenceSession, c: Case): Promise<Float32Array> {
  const { B, S, P, T } = c;
  const q = new Float32Array(B * S * nq * hd);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nq; h++) {
      for (let s = 0; s < S; s++) {
        q.set(c.qh[b * nq + h].subarray(s * hd, (s + 1) * hd), ((b * S + s) * nq + h) * hd);
      }
    }
  }
  const k = new Float32Array(B * S * kv * hd), v = new Float32Array(B * S * kv * hd);
  const pk = new Float32Array(B * kv * P * hd), pv = new Float32Array(B * kv * P * hd);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < kv; h++) {
      const K = c.kh[b * kv + h], V = c.vh[b * kv + h];
      pk.set(K.subarray(0, P * hd), (b * kv + h) * P * hd);
      pv.set(V.subarray(0, P * hd), (b * kv + h) * P * hd);
      for (let s = 0; s < S; s++) {
        k.set(K.subarray((P + s) * hd, (P + s + 1) * hd), ((b * S + s) * kv + h) * hd);
        v.set(V.subarray((P + s) * hd, (P + s + 1) * hd), ((b * S + s) * kv + h) * hd);
      }
    }
  }
  const out = await sess.run({
    q: new ort.Tensor("float32", q, [B, S, nq * hd]),
    k: new ort.Tensor("float32", k, [B, S, kv * hd]),
    v: new ort.Tensor("float32", v, [B, S, kv * hd]),
    pk: new ort.Tensor("float32", pk, [B, kv, P, hd]),
    pv: new ort.Tensor("float32", pv, [B, kv, P, hd]),
    seqlens: new ort.Tensor("int64", new BigInt64Array(B).fill(BigInt(T - 1)), [B]),
    total: new ort.Tensor("int64", BigInt64Array.from([BigInt(T)]), []),
    bias: new ort.Tensor("float32", biasData(c), [B, 1, S, T]),
  });
  // to [B, nq, S, hd]
  const y = out.y.data as Float32Array, r = new Float32Array(y.length);
  for (let b = 0; b < B; b++) {
    for (let s = 0; s < S; s++) {
      for (let h = 0; h < nq; h++) {
        r.set(
          y.subarray(((b * S + s) * nq + h) * hd, ((b * S + s) * nq + h + 1) * hd),
          ((b * nq + h) * S + s) * hd,
        );
      }
    }
  }
  return r;
}

// float64 reference on the real positions
function reference(c: Case): Float64Array {
  const { B, S, T, P } = c;
  const out = new Float64Array(B * nq * S * hd);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nq; h++) {
      const Q = c.qh[b * nq + h],
        K = c.kh[b * kv + Math.floor(h / g)],
        V = c.vh[b * kv + Math.floor(h / g)];
      for (let s = 0; s < S; s++) {
        const sc = new Float64Array(T);
        let mx = -Infinity;
        for (let t = 0; t < T; t++) {
          if (!(t <= P + s && c.mask[b][t])) {
            sc[t] = -Infinity;
            continue;
          }
          let d = 0;
          for (let i = 0; i < hd; i++) d += Q[s * hd + i] * K[t * hd + i];
          sc[t] = d;
          mx = Math.max(mx, d);
        }
        let den = 0;
        for (let t = 0; t < T; t++) {
          sc[t] = sc[t] === -Infinity ? 0 : Math.exp(sc[t] - mx);
          den += sc[t];
        }
        for (let i = 0; i < hd; i++) {
          let n = 0;
          for (let t = 0; t < T; t++) n += sc[t] * V[t * hd + i];
          out[((b * nq + h) * S + s) * hd + i] = den ? n / den : NaN;
        }
      }
    }
  }
  return out;
}

function maxDiff(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  c: Case,
  realOnly = true,
  rows?: number[],
): number {
  let m = 0;
  for (let b0 = 0; b0 < c.B; b0++) {
    if (rows && !rows.includes(b0)) continue;
    for (let h = 0; h < nq; h++) {
      for (let s = 0; s < c.S; s++) {
        if (realOnly && !c.mask[b0][c.P + s]) continue;
        for (let i = 0; i < hd; i++) {
          const j = ((b0 * nq + h) * c.S + s) * hd + i;
          m = Math.max(m, Math.abs(a[j] - b[j]));
        }
      }
    }
  }
  return m;
}

const opts = {
  graphOptimizationLevel: "all" as const,
  intraOpNumThreads: 2,
  logSeverityLevel: 3 as const,
};
const plain = await ort.InferenceSession.create(plainModel(), opts);
const gqa = await ort.InferenceSession.create(gqaModel(), opts);
console.log(`heads ${nq}, kv ${kv}, hd ${hd}`);

if (!speedS) {
  // Prefill, two rows: row 0 has 5 tokens (left-padded by 4), row 1 has 9.
  const L0 = Number(Deno.env.get("L0") ?? 5), L1 = Number(Deno.env.get("L1") ?? 9);
  const d0 = rowData(L0), d1 = rowData(L1);
  const batch = makeCase([{ len: L0, data: d0 }, { len: L1, data: d1 }], L1, 0);
  const ref = reference(batch);
  const pOut = await runPlain(plain, batch);
  let gOut: Float32Array | undefined;
  try {
    gOut = await runGqa(gqa, batch);
  } catch (e) {
    console.log("GQA prefill refused:", (e as Error).message.split("\n")[0]);
  }
  console.log(
    `prefill, batch of 2 (${L0} tokens left-padded by ${L1 - L0}, ${L1} tokens): plain vs float64 ${
      maxDiff(pOut, ref, batch).toExponential(2)
    }`,
  );
  if (gOut) {
    console.log(
      `  GQA vs float64 ${maxDiff(gOut, ref, batch).toExponential(2)}, GQA vs plain ${
        maxDiff(gOut, pOut, batch).toExponential(2)
      }`,
    );
    // batch invariance: row 0 alone (no padding)
    const alone = makeCase([{ len: L0, data: d0 }], L0, 0);
    const gA = await runGqa(gqa, alone), pA = await runPlain(plain, alone);
    let gm = 0, pm = 0;
    for (let h = 0; h < nq; h++) {
      for (let s = 0; s < L0; s++) {
        for (let i = 0; i < hd; i++) {
          const a = (h * L0 + s) * hd + i, bIdx = (h * L1 + s + L1 - L0) * hd + i;
          gm = Math.max(gm, Math.abs(gA[a] - gOut[bIdx]));
          pm = Math.max(pm, Math.abs(pA[a] - pOut[bIdx]));
        }
      }
    }
    console.log(
      `  row of ${L0} alone vs left-padded in the batch: GQA max|Δ| ${gm}, plain max|Δ| ${pm}`,
    );
  }
  // Decode: past 9 (row 0: 5 real, left-padded), one new token each.
  const e0 = rowData(L0 + 1), e1 = rowData(L1 + 1);
  const dec = makeCase([{ len: L0 + 1, data: e0 }, { len: L1 + 1, data: e1 }], 1, L1);
  const dref = reference(dec);
  const dp = await runPlain(plain, dec);
  try {
    const dg = await runGqa(gqa, dec);
    console.log(
      `decode step (past ${L1}, row 0 left-padded by ${L1 - L0}): plain vs float64 ${
        maxDiff(dp, dref, dec).toExponential(2)
      }, GQA vs float64 ${maxDiff(dg, dref, dec).toExponential(2)}, GQA vs plain ${
        maxDiff(dg, dp, dec).toExponential(2)
      }`,
    );
    const decA = makeCase([{ len: L0 + 1, data: e0 }], 1, L0);
    const dgA = await runGqa(gqa, decA), dpA = await runPlain(plain, decA);
    console.log(
      `  row 0 alone vs in the batch: GQA max|Δ| ${
        maxDiff(dgA, dg.subarray(0, nq * hd), decA)
      }, plain max|Δ| ${maxDiff(dpA, dp.subarray(0, nq * hd), decA)}`,
    );
  } catch (e) {
    console.log("GQA decode refused:", (e as Error).message.split("\n")[0]);
  }
} else {
  const S = speedS;
  const c = makeCase([{ len: S, data: rowData(S) }], S, 0);
  const time = async (f: () => Promise<unknown>, n: number) => {
    await f();
    const t: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await f();
      t.push(performance.now() - t0);
    }
    return t.sort((a, b) => a - b)[n >> 1];
  };
  const tp: number[] = [], tg: number[] = [];
  for (let r = 0; r < 3; r++) {
    tp.push(await time(() => runPlain(plain, c), 1));
    tg.push(await time(() => runGqa(gqa, c), 1));
  }
  const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1];
  console.log(
    `prefill ${S} tokens, one layer's attention (incl. JS feed building): plain ${
      med(tp).toFixed(0)
    } ms, GQA ${med(tg).toFixed(0)} ms`,
  );
  const d = makeCase([{ len: S + 1, data: rowData(S + 1) }], 1, S);
  const dp: number[] = [], dg: number[] = [];
  for (let r = 0; r < 9; r++) {
    dp.push(await time(() => runPlain(plain, d), 1));
    dg.push(await time(() => runGqa(gqa, d), 1));
  }
  console.log(
    `decode step after ${S}: plain ${med(dp).toFixed(2)} ms, GQA ${med(dg).toFixed(2)} ms`,
  );
}
