// The client side of the list benches (bench/lists.mjs, bench/peer-lists.mjs): the ~51 KB test
// mail and the load loop, shared so both measure with the very same code.

import { randomBytes } from "node:crypto";

const PARAGRAPH =
  "Hello team, please find the notes from today's review below. We went through the open items, agreed on owners and dates, and parked two questions for next week. ";

/** A plain-text mail of about 51 KB to `to`, the n-th of its series. */
export function message(to, n) {
  const body = `${PARAGRAPH.repeat(Math.ceil(51_000 / PARAGRAPH.length))}\r\n`.replace(/(.{76})/g, "$1\r\n");
  return [
    "From: Ada Sender <ada@sender.example.org>",
    `To: ${to}`,
    `Subject: Review notes ${n}`,
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: <list-${n}-${randomBytes(6).toString("hex")}@sender.example.org>`,
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    body,
  ].join("\r\n");
}

/**
 * n GETs of `url` with `key` as bearer token, c in flight at a time. Global fetch (undici) keeps
 * connections alive and every body is read; only 2xx answers become samples.
 */
export async function load(url, key, n, c) {
  const samples = [];
  let errors = 0;
  let bytes = 0;
  let next = 0;
  const loop = async () => {
    for (let i = next++; i < n; i = next++) {
      const t0 = performance.now();
      try {
        const res = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
        const buf = await res.arrayBuffer();
        if (res.ok) {
          samples.push(performance.now() - t0);
          bytes = buf.byteLength;
        } else errors++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(c, n) }, loop));
  return { samples, errors, bytes };
}

const pct = (sorted, p) => (sorted.length ? sorted[Math.floor(p * (sorted.length - 1))] : null);

/** p50/p99 over the samples of several load() runs, with their errors and last response size. */
export function summarize(runs) {
  const sorted = runs.flatMap((r) => r.samples).sort((a, b) => a - b);
  return {
    samples: sorted.length,
    p50_ms: pct(sorted, 0.5),
    p99_ms: pct(sorted, 0.99),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    response_bytes: runs.at(-1)?.bytes ?? 0,
  };
}
