import { argon2id, argon2Verify } from "hash-wasm";
import argon2Module from "./wasm/argon2.wasm";
import blake2bModule from "./wasm/blake2b.wasm";

/**
 * hash-wasm compiles its embedded WebAssembly from bytes at run time, which workerd forbids
 * ("Wasm code generation disallowed by embedder"). `scripts/extract-wasm.mjs` extracts the
 * two modules Argon2id needs at install time, the bundler precompiles them, and here we hand
 * hash-wasm the precompiled module instead of compiling. The bytes are told apart by an export
 * name only the argon2 module has.
 */
type Compile = (bytes: BufferSource) => Promise<WebAssembly.Module>;
const wasm = WebAssembly as unknown as { compile: Compile };
const ARGON2_MARKER = new TextEncoder().encode("Hash_SetMemorySize");

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

if (!(wasm.compile as { mailbotPatched?: boolean }).mailbotPatched) {
  const original = wasm.compile.bind(WebAssembly);
  const patched: Compile = async (bytes) => {
    const view =
      bytes instanceof ArrayBuffer
        ? new Uint8Array(bytes)
        : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (view.byteLength < 16_384) return contains(view, ARGON2_MARKER) ? argon2Module : blake2bModule;
    return original(bytes);
  };
  (patched as { mailbotPatched?: boolean }).mailbotPatched = true;
  wasm.compile = patched;
}

/** OWASP's minimum for Argon2id: 19 MiB, 2 iterations, 1 lane. */
export const ARGON2_PARAMS = { memorySize: 19_456, iterations: 2, parallelism: 1, hashLength: 32 } as const;

/** Hashes a secret into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`). */
export async function hashSecret(secret: string): Promise<string> {
  return argon2id({
    password: secret,
    salt: crypto.getRandomValues(new Uint8Array(16)),
    ...ARGON2_PARAMS,
    outputType: "encoded",
  });
}

/** Verifies a secret against a PHC string; false on any mismatch or malformed hash. */
export async function verifySecret(secret: string, hash: string): Promise<boolean> {
  try {
    return await argon2Verify({ password: secret, hash });
  } catch {
    return false;
  }
}
