/**
 * Finds a repeated key in any object of a JSON text (which JSON.parse would
 * silently resolve to the last). Iterative, so nesting depth cannot overflow
 * the stack; linear in the text.
 *
 * @example
 * ```ts
 * import { checkJsonKeys } from "./_json.ts";
 * console.log(checkJsonKeys('{"a": 1, "a": 2}')); // "a"
 * console.log(checkJsonKeys('{"a": {"a": 1}}')); // undefined
 * ```
 *
 * @module
 */

/** The first key repeated within one object of valid JSON `text`, if any. */
export function checkJsonKeys(text: string): string | undefined {
  // One entry per open container: a key set for objects, null for arrays.
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "{") {
      stack.push(new Set());
      expectKey = true;
    } else if (c === "[") {
      stack.push(null);
      expectKey = false;
    } else if (c === "}" || c === "]") {
      stack.pop();
      expectKey = false;
    } else if (c === ",") {
      expectKey = stack.at(-1) instanceof Set;
    } else if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        const keys = stack.at(-1)!;
        if (keys.has(key)) return key;
        keys.add(key);
        expectKey = false;
      }
      i = j;
    }
  }
  return undefined;
}
