/**
 * API keys: `Authorization: Bearer K` compared with the server's key in
 * constant time (both sides hashed first, so neither the length nor the
 * first differing byte shows in the timing).
 *
 * @example
 * ```ts
 * import { ApiKey } from "./auth.ts";
 * const key = await ApiKey.of("secret");
 * console.log(await key.allows("Bearer secret"), await key.allows("Bearer guess")); // true false
 * ```
 *
 * @module
 */

import { timingSafeEqual } from "node:crypto";

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** The key a server requires. */
export class ApiKey {
  private constructor(private readonly hash: Uint8Array) {}

  /** A key (a non-empty string). */
  static async of(key: string): Promise<ApiKey> {
    if (key === "") throw new RangeError("an API key cannot be empty");
    return new ApiKey(await digest(key));
  }

  /** Whether an `Authorization` header value carries the key. */
  async allows(header: string | null): Promise<boolean> {
    const match = /^Bearer[ \t]+(.+)$/i.exec(header ?? "");
    const given = await digest(match?.[1].trim() ?? "");
    return timingSafeEqual(given, this.hash) && match !== null;
  }
}
