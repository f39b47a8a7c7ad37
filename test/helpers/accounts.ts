import { env } from "cloudflare:workers";
import { argon2id } from "hash-wasm";
import { register, toAccountWire } from "../../src/features/accounts/accounts.service";
import { CreateKeyInput } from "../../src/features/api-keys/api-keys.schemas";
import { createKey as createKeyVerb, toKeyWire } from "../../src/features/api-keys/api-keys.service";
import { toInboxWire } from "../../src/features/inboxes/inboxes.service";
// Side effect first: hands hash-wasm the precompiled Argon2 module (workerd forbids compiling it).
import "../../src/lib/argon2";
import { createContext, forAccount, systemContext } from "../../src/lib/context";
import { newId } from "../../src/lib/ids";

/**
 * Argon2id at the smallest cost hash-wasm accepts (8 KiB, 1 pass) instead of the production
 * 19 MiB / 2 passes. The hash is a normal PHC string, so the Worker verifies it through its
 * real path (`argon2Verify` reads the cost from the string), in microseconds instead of ~100 ms.
 */
async function cheapHash(secret: string): Promise<string> {
  return argon2id({
    password: secret,
    salt: crypto.getRandomValues(new Uint8Array(16)),
    memorySize: 8,
    iterations: 1,
    parallelism: 1,
    hashLength: 32,
    outputType: "encoded",
  });
}

export interface TestAccount {
  key: string;
  /** The id of `key` (not in the register answer; the factory knows it). */
  keyId: string;
  // biome-ignore lint/suspicious/noExplicitAny: the wire shapes of POST /v1/auth/register, read field by field
  account: any;
  // biome-ignore lint/suspicious/noExplicitAny: as above
  inbox: any;
}

let counter = 0;

/**
 * A fresh account with a full key and its sandbox inbox: the real registration verb (same rows,
 * event and audit entries, same return shape as `POST /v1/auth/register`), called directly with
 * a cheaply hashed key. Tests about registration itself use `registerAccount` (the real route).
 */
export async function createAccount(label = "user"): Promise<TestAccount> {
  counter++;
  const email = `${label}-${counter}-${crypto.randomUUID().slice(0, 8)}@example.com`;
  const ctx = systemContext(env, { requestId: newId("req") });
  const { account, key, inbox, keyId } = await register(
    ctx,
    { email, name: `${label} ${counter}` },
    { hashKey: cheapHash },
  );
  // Through JSON, like the route's answer (no undefined fields, ISO strings).
  return JSON.parse(JSON.stringify({ key, keyId, account: toAccountWire(account, env), inbox: toInboxWire(inbox) }));
}

/**
 * Another key of the account, as `POST /v1/api-keys` makes it (the real verb: row and audit
 * entry; the answer's wire shape with the key), with the cheap hash. Tests about the key routes
 * use the route.
 */
export async function createKey(
  owner: Pick<TestAccount, "account" | "keyId">,
  input: { name: string; scopes?: string[]; inbox_ids?: string[] },
) {
  const base = createContext(env, { actor: { type: "api_key", id: owner.keyId }, requestId: newId("req") });
  const { row, key } = await createKeyVerb(forAccount(base, owner.account.id), CreateKeyInput.parse(input), {
    hashKey: cheapHash,
  });
  return { ...toKeyWire(row), key };
}
