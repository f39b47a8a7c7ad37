import { config } from "../../config";
import type { DomainRow } from "../../db/schema";
import type { Bindings } from "../../env";
import { openText, sealText } from "../../lib/crypto";
import { InternalError } from "../../lib/errors";
import { generateDkimKeyPair, importSigningKey, publicKeyOf } from "./dkim";

/**
 * Where DKIM keys come from: a custom domain's key is generated when the domain is added and kept
 * sealed in D1; the shared MAIL_DOMAIN's key is configuration (the DKIM_PRIVATE_KEY secret).
 * Imported keys are cached per isolate so a send pays for neither a decryption nor an import.
 */

export interface SigningKey {
  key: CryptoKey;
  /** base64 SPKI: what the domain's DKIM record must publish. */
  publicKey: string;
}

const sharedCache = new Map<string, Promise<SigningKey>>();
const domainCache = new Map<string, Promise<CryptoKey>>();
let ephemeral: Promise<string> | null = null;

/**
 * The shared domain's signing key. With ENVIRONMENT exactly "development" and no DKIM_PRIVATE_KEY
 * configured, an ephemeral key made once per isolate stands in (the local records resolver
 * publishes its public half), so `npm run dev` sends without any setup. Any other environment
 * without the secret has none: the gate then blocks shared-domain sends with `dkim_failed`
 * rather than send unsigned or under a key nobody published.
 */
export async function sharedDomainKey(env: Bindings): Promise<SigningKey | null> {
  let pkcs8 = env.DKIM_PRIVATE_KEY?.trim();
  if (!pkcs8) {
    if (!config(env).isDevelopment) return null;
    ephemeral ??= generateDkimKeyPair().then((p) => p.privateKey);
    pkcs8 = await ephemeral;
  }
  let hit = sharedCache.get(pkcs8);
  if (!hit) {
    const text = pkcs8;
    hit = Promise.all([importSigningKey(text), publicKeyOf(text)]).then(([key, publicKey]) => ({ key, publicKey }));
    // A malformed secret must not poison the cache: the next send tries (and fails) again.
    hit.catch(() => sharedCache.delete(text));
    sharedCache.set(pkcs8, hit);
  }
  return hit;
}

function encryptionKey(env: Bindings): string {
  const secret = env.DKIM_ENCRYPTION_KEY;
  if (!secret) {
    throw new InternalError(
      "configuration_error",
      "DKIM_ENCRYPTION_KEY is not set on this deployment, so DKIM keys cannot be stored or used.",
    );
  }
  return secret;
}

/** A new key pair for a domain, its private half sealed for storage. */
export async function newDomainKey(
  env: Bindings,
  domainId: string,
): Promise<{ publicKey: string; sealedPrivateKey: string }> {
  const secret = encryptionKey(env);
  const pair = await generateDkimKeyPair();
  // The domain id is bound into the key derivation: a sealed key copied to another row does not open.
  return { publicKey: pair.publicKey, sealedPrivateKey: await sealText(secret, `dkim:${domainId}`, pair.privateKey) };
}

/** The signing key of a custom domain (opened from its sealed form once per isolate). */
export async function domainSigningKey(env: Bindings, row: DomainRow): Promise<CryptoKey> {
  const cacheKey = `${row.id}:${row.dkimPrivateKeySealed.slice(0, 32)}`;
  let hit = domainCache.get(cacheKey);
  if (!hit) {
    hit = openText(encryptionKey(env), `dkim:${row.id}`, row.dkimPrivateKeySealed).then(importSigningKey);
    hit.catch(() => domainCache.delete(cacheKey));
    if (domainCache.size > 1000) domainCache.clear();
    domainCache.set(cacheKey, hit);
  }
  return hit;
}
