import { createHash, createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { parseRetryAfter, retrySchedule } from "../../src/features/webhooks/attempt";
import { openSecret, sealSecret, signatureHeaders } from "../../src/features/webhooks/signing";
import { allowLocalWebhooks, checkWebhookUrl, isPublicIpv6, parseIpv6 } from "../../src/features/webhooks/url-guard";
import { hashSecret, verifySecret } from "../../src/lib/argon2";
import { fallbackCodecs, fromBase64, sha256Hex, toBase64, toHex } from "../../src/lib/crypto";
import { dohResolver, joinTxt, staticResolver } from "../../src/lib/dns";
import { newId } from "../../src/lib/ids";
import { DEFAULT_TIERS, tierLimits } from "../../src/lib/tiers";

const resolver = staticResolver({
  "hooks.example.com": { A: ["93.184.216.34"], AAAA: ["2606:2800:220:1::1"] },
  "inside.example.com": { A: ["192.168.10.5"] },
  "nat64.example.com": { AAAA: ["64:ff9b::a00:1"] },
  "sixtofour.example.com": { AAAA: ["2002:c0a8:0101::1"] },
  "ula.example.com": { AAAA: ["fd12:3456::1"] },
});

describe("the webhook URL guard", () => {
  const production = { allowLocal: false, resolver };
  it.each([
    "http://localhost:3000/hook",
    "http://127.0.0.1:8080/hook",
    "https://localhost/hook",
    "https://LOCALHOST./hook",
    "https://127.0.0.1/hook",
    "https://[::1]/hook",
    "https://[0:0:0:0:0:0:0:1]/hook",
    "https://[::]/hook",
    "https://[::ffff:7f00:1]/hook",
    "https://[::ffff:169.254.169.254]/hook",
    "https://[fe80::1%25eth0]/hook",
    "https://[ff02::1]/hook",
    "https://[2001:db8::1]/hook",
    "https://10.255.255.255/hook",
    "https://172.31.0.1/hook",
    "https://100.127.255.254/hook",
    "https://169.254.0.1/hook",
    "https://192.0.2.1/hook",
    "https://240.0.0.1/hook",
    "https://255.255.255.255/hook",
    "https://3232235777/hook",
    "https://0xc0.0xa8.1.1/hook",
    "https://0300.0250.1.1/hook",
    "https://10.1/hook",
    "https://instance-data/latest",
    "https://metadata/computeMetadata",
    "https://printer.local/hook",
    "https://intranet/hook",
    "https://a:b@hooks.example.com/hook",
    "https://inside.example.com/hook",
    "https://nat64.example.com/hook",
    "https://sixtofour.example.com/hook",
    "https://ula.example.com/hook",
    "https://missing.example.com/hook",
    `https://hooks.example.com/${"x".repeat(2100)}`,
  ])("refuses %s in production", async (url) => {
    const verdict = await checkWebhookUrl(url, production);
    expect(verdict.ok).toBe(false);
  });

  it.each([
    "https://hooks.example.com/hook",
    "https://hooks.example.com:8443/a?b=c",
    "https://93.184.216.34/hook",
    "https://[2606:4700:4700::1111]/hook",
  ])("accepts %s", async (url) => {
    expect((await checkWebhookUrl(url, production)).ok).toBe(true);
  });

  it("local development allows exactly http(s)://localhost and 127.0.0.1, never other spellings", async () => {
    const dev = { allowLocal: true, resolver };
    for (const ok of [
      "http://localhost/hook",
      "http://localhost:8788/x",
      "http://127.0.0.1:9/x",
      "https://127.0.0.1/x",
    ]) {
      expect((await checkWebhookUrl(ok, dev)).ok, ok).toBe(true);
    }
    for (const bad of [
      "http://2130706433/",
      "http://127.1/",
      "http://[::1]/",
      "http://0x7f.0.0.1/",
      "http://10.0.0.1/",
    ]) {
      expect((await checkWebhookUrl(bad, dev)).ok, bad).toBe(false);
    }
    expect(allowLocalWebhooks({ ENVIRONMENT: "production", WEBHOOK_ALLOW_LOCAL: "true" })).toBe(false);
    expect(allowLocalWebhooks({ ENVIRONMENT: "development", WEBHOOK_ALLOW_LOCAL: "true" })).toBe(true);
    expect(allowLocalWebhooks({ ENVIRONMENT: "development", WEBHOOK_ALLOW_LOCAL: undefined })).toBe(false);
  });

  it("parses IPv6 forms", () => {
    expect(parseIpv6("::1")).toEqual([0, 0, 0, 0, 0, 0, 0, 1]);
    expect(parseIpv6("::ffff:10.0.0.1")).toEqual([0, 0, 0, 0, 0, 0xffff, 0x0a00, 1]);
    expect(parseIpv6("2001:db8::")).toEqual([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]);
    expect(parseIpv6("1::2::3")).toBeNull();
    expect(parseIpv6("12345::")).toBeNull();
    expect(isPublicIpv6("::ffff:8.8.8.8")).toBe(true);
    expect(isPublicIpv6("2a00:1450:4001:80b::200e")).toBe(true);
  });
});

describe("the DoH resolver", () => {
  function fakeDoh(answers: Record<string, { status?: number; json?: unknown }>) {
    const calls: string[] = [];
    const fetcher = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(String(input));
      expect(new Headers(init?.headers).get("accept")).toBe("application/dns-json");
      const key = `${url.searchParams.get("type")} ${url.searchParams.get("name")}`;
      calls.push(key);
      const a = answers[key];
      if (!a) throw new TypeError("network down");
      return new Response(JSON.stringify(a.json ?? {}), { status: a.status ?? 200 });
    }) as typeof fetch;
    return { fetcher, calls };
  }

  it("keeps ok, nxdomain, nodata and temporary failures apart, for A, AAAA, TXT and MX", async () => {
    const { fetcher } = fakeDoh({
      "A example.com": {
        json: {
          Status: 0,
          Answer: [
            { name: "example.com", type: 5, TTL: 30, data: "cdn.example.net." },
            { name: "cdn.example.net", type: 1, TTL: 120, data: "93.184.216.34" },
          ],
        },
      },
      "AAAA example.com": { json: { Status: 0 } },
      "TXT example.com": {
        json: {
          Status: 0,
          Answer: [{ name: "example.com", type: 16, TTL: 60, data: '"v=spf1 include:_spf.mx.cloudflare.net " "-all"' }],
        },
      },
      "MX example.com": {
        json: { Status: 0, Answer: [{ name: "example.com", type: 15, TTL: 60, data: "10 mx.example.com." }] },
      },
      "A gone.example.com": { json: { Status: 3 } },
      "A broken.example.com": { json: { Status: 2 } },
      "A busy.example.com": { status: 503 },
    });
    const r = dohResolver({ fetcher });
    expect(await r.resolve("Example.com.", "A")).toEqual({ status: "ok", records: ["93.184.216.34"], ttl: 120 });
    expect(await r.resolve("example.com", "AAAA")).toEqual({ status: "nodata" });
    expect(await r.resolve("example.com", "TXT")).toMatchObject({
      status: "ok",
      records: ["v=spf1 include:_spf.mx.cloudflare.net -all"],
    });
    expect(await r.resolve("example.com", "MX")).toMatchObject({ records: ["10 mx.example.com"] });
    expect(await r.resolve("gone.example.com", "A")).toEqual({ status: "nxdomain" });
    expect((await r.resolve("broken.example.com", "A")).status).toBe("temporary_failure");
    expect((await r.resolve("busy.example.com", "A")).status).toBe("temporary_failure");
    expect((await r.resolve("offline.example.com", "A")).status).toBe("temporary_failure");
    expect(joinTxt('"a\\"b" "c\\059"')).toBe('a"bc;');
  });

  it("caches per isolate for min(TTL, 5 min), and never caches a temporary failure", async () => {
    let now = 1_000_000;
    const { fetcher, calls } = fakeDoh({
      "A long.example.com": { json: { Status: 0, Answer: [{ name: "x", type: 1, TTL: 86400, data: "1.1.1.1" }] } },
      "A short.example.com": { json: { Status: 0, Answer: [{ name: "x", type: 1, TTL: 10, data: "1.0.0.1" }] } },
    });
    const r = dohResolver({ fetcher, now: () => now });
    await r.resolve("long.example.com", "A");
    await r.resolve("short.example.com", "A");
    await r.resolve("flaky.example.com", "A");
    now += 9_000;
    await r.resolve("long.example.com", "A");
    await r.resolve("short.example.com", "A");
    await r.resolve("flaky.example.com", "A");
    expect(calls.filter((c) => c.includes("long"))).toHaveLength(1);
    expect(calls.filter((c) => c.includes("short"))).toHaveLength(1);
    expect(calls.filter((c) => c.includes("flaky"))).toHaveLength(2);
    now += 2_000;
    await r.resolve("short.example.com", "A");
    expect(calls.filter((c) => c.includes("short"))).toHaveLength(2);
    now += 300_000;
    await r.resolve("long.example.com", "A");
    expect(calls.filter((c) => c.includes("long"))).toHaveLength(2);
  });
});

describe("signing and the retry schedule", () => {
  it("signs exactly as API.md, both header sets, over the exact bytes", async () => {
    const secret = `whsec_${Buffer.from("0123456789abcdefghijklmn").toString("base64")}`;
    const body = new TextEncoder().encode('{"id":"evt_1","data":{"s":"Ünïcode ✓"}}');
    const headers = await signatureHeaders({
      eventId: "evt_1",
      timestampSeconds: 1_800_000_000,
      body,
      secrets: [secret],
    });
    const ours = createHmac("sha256", secret).update("1800000000.").update(body).digest("hex");
    const key = Buffer.from(secret.slice(6), "base64");
    const standard = createHmac("sha256", key).update("evt_1.1800000000.").update(body).digest("base64");
    expect(headers).toEqual({
      "X-Mailbot-Timestamp": "1800000000",
      "X-Mailbot-Signature": `sha256=${ours}`,
      "webhook-id": "evt_1",
      "webhook-timestamp": "1800000000",
      "webhook-signature": `v1,${standard}`,
    });
    const rotated = await signatureHeaders({ eventId: "evt_1", timestampSeconds: 1, body, secrets: [secret, secret] });
    expect(rotated["webhook-signature"]?.split(" ")).toHaveLength(2);
  });

  it("seals secrets when a key is configured", async () => {
    const sealed = await sealSecret({ WEBHOOK_ENCRYPTION_KEY: "k" }, "whsec_abc");
    expect(sealed).toMatch(/^sealed:v1:/);
    expect(await openSecret({ WEBHOOK_ENCRYPTION_KEY: "k" }, sealed)).toBe("whsec_abc");
    expect(await sealSecret({ WEBHOOK_ENCRYPTION_KEY: undefined }, "whsec_abc")).toBe("whsec_abc");
    await expect(openSecret({ WEBHOOK_ENCRYPTION_KEY: "other" }, sealed)).rejects.toThrow();
  });

  it("uses 0, 30 s, 2 min, 10 min, 1 h, 6 h unless configured; reads Retry-After as seconds or a date", () => {
    expect(retrySchedule({ WEBHOOK_RETRY_SCHEDULE: undefined })).toEqual([0, 30, 120, 600, 3600, 21600]);
    expect(retrySchedule({ WEBHOOK_RETRY_SCHEDULE: "0, 5, 5" })).toEqual([0, 5, 5]);
    expect(retrySchedule({ WEBHOOK_RETRY_SCHEDULE: "0,x" })).toEqual([0, 30, 120, 600, 3600, 21600]);
    const now = Date.parse("2026-11-24T10:00:00Z");
    expect(parseRetryAfter("120", now)).toBe(120);
    expect(parseRetryAfter("Tue, 24 Nov 2026 10:05:00 GMT", now)).toBe(300);
    expect(parseRetryAfter("soon", now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
  });
});

describe("docs/webhooks.md", () => {
  it("shows the verification snippets verbatim (the receiver of the webhook tests runs these files)", async () => {
    const doc = (await import("../../docs/webhooks.md?raw")).default;
    const node = (await import("../../examples/webhooks/verify.mjs?raw")).default;
    const python = (await import("../../examples/webhooks/verify.py?raw")).default;
    expect(doc).toContain(`\`\`\`js\n${node.trimEnd()}\n\`\`\``);
    expect(doc).toContain(`\`\`\`python\n${python.trimEnd()}\n\`\`\``);
  });
});

describe("hex", () => {
  it("toHex is lower-case, two digits per byte, for every byte value; sha256Hex matches Node's", async () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(toHex(all)).toBe(Buffer.from(all).toString("hex"));
    expect(toHex(all.buffer)).toBe(Buffer.from(all).toString("hex"));
    expect(toHex(all.subarray(250, 253))).toBe("fafbfc");
    expect(toHex(new Uint8Array(0))).toBe("");
    expect(await sha256Hex("mb_key")).toBe(createHash("sha256").update("mb_key").digest("hex"));
  });

  it("base64 both ways matches Node's, and fromBase64 is as forgiving as atob (whitespace, no padding) and as strict", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(toBase64(all)).toBe(Buffer.from(all).toString("base64"));
    expect(toBase64(all.buffer)).toBe(Buffer.from(all).toString("base64"));
    expect([...fromBase64(Buffer.from(all).toString("base64"))]).toEqual([...all]);
    for (const text of ["aGk=", "aGk", "aGVsbG8=", "aGVsbG8", "aGVs\r\nbG8=", " aGVs bG8 ", ""]) {
      expect([...fromBase64(text)], text).toEqual([...Uint8Array.from(atob(text), (c) => c.charCodeAt(0))]);
    }
    for (const bad of ["a", "a$bc", "ab=c", "@@@@", "-_-_", "abc==", "ab==cd"]) {
      expect(() => atob(bad), bad).toThrow();
      expect(() => fromBase64(bad), bad).toThrow();
      expect(() => fallbackCodecs.fromBase64(bad), bad).toThrow();
    }
    // Non-zero padding bits are ignored by both, like atob.
    expect([...fromBase64("YR==")]).toEqual([...Uint8Array.from(atob("YR=="), (c) => c.charCodeAt(0))]);
    // Views cover their own bytes only.
    const view = all.subarray(10, 13);
    expect(toHex(view)).toBe("0a0b0c");
    expect(toBase64(view)).toBe(Buffer.from([10, 11, 12]).toString("base64"));
  });

  it("the JavaScript fallbacks agree with the native codecs", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(fallbackCodecs.toHex(all)).toBe(toHex(all));
    expect(fallbackCodecs.toBase64(all)).toBe(toBase64(all));
    expect([...fallbackCodecs.fromBase64(" aGVs\nbG8 ")]).toEqual([...fromBase64(" aGVs\nbG8 ")]);
    expect(fallbackCodecs.toHex(all.subarray(250, 253))).toBe("fafbfc");
  });
});

describe("ids", () => {
  it("are prefixed and sort in creation order, even within one millisecond", () => {
    const ids = Array.from({ length: 200 }, () => newId("msg", 1_700_000_000_000));
    expect(ids.every((id) => /^msg_[0-9a-z]{26}$/.test(id))).toBe(true);
    expect([...ids].sort()).toEqual(ids);
    expect(newId("msg", 1_700_000_000_001) > (ids.at(-1) as string)).toBe(true);
  });
});

describe("argon2id inside workerd", () => {
  it("hashes with the OWASP parameters and verifies", async () => {
    const hash = await hashSecret("mb_secret");
    expect(hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(await verifySecret("mb_secret", hash)).toBe(true);
    expect(await verifySecret("mb_other", hash)).toBe(false);
    expect(await verifySecret("mb_secret", "garbage")).toBe(false);
  });
});

describe("tiers", () => {
  it("sandbox defaults are 60 requests a minute with a burst of 10", () => {
    expect(DEFAULT_TIERS.sandbox).toMatchObject({ requests_per_minute: 60, burst: 10 });
    expect(tierLimits(undefined, "sandbox").requests_per_minute).toBe(60);
    expect(tierLimits('{"sandbox":{"burst":20}}', "sandbox")).toMatchObject({ requests_per_minute: 60, burst: 20 });
    expect(tierLimits(undefined, "unknown")).toEqual(DEFAULT_TIERS.sandbox);
  });
});
