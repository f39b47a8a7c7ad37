import { afterEach, describe, expect, it } from "vitest";
import { setDnsResolver, staticResolver } from "../../src/lib/dns";
import { createAccount } from "../helpers/accounts";
import { call } from "../helpers/api";
import { countRows } from "../helpers/db";

afterEach(() => {
  setDnsResolver(null);
});

/**
 * A held-back set of hostile or unusual inputs to the webhook endpoints (issue 16): every one is
 * refused with a 4xx and leaves no endpoint behind. SSRF spellings, internal names, DNS answers
 * that point inside, and malformed bodies.
 */
const hostileUrls: [string, string][] = [
  ["plain http", "http://example.com/hook"],
  ["userinfo", "https://user:pw@example.com/hook"],
  ["private 10/8", "https://10.0.0.1/hook"],
  ["cloud metadata", "https://169.254.169.254/latest/meta-data"],
  ["IPv6 loopback", "https://[::1]/hook"],
  ["IPv4-mapped loopback", "https://[::ffff:127.0.0.1]/hook"],
  ["IPv6 ULA", "https://[fd00::1]/hook"],
  ["IPv6 link-local", "https://[fe80::1]/hook"],
  ["hex IPv4", "https://0x7f000001/hook"],
  ["decimal IPv4", "https://2130706433/hook"],
  ["octal IPv4", "https://017700000001/hook"],
  ["short IPv4", "https://127.1/hook"],
  ["metadata name", "https://metadata.google.internal/hook"],
  [".local name", "https://printer.local/hook"],
  ["single-label name", "https://intranet/hook"],
  ["CGNAT", "https://100.64.0.1/hook"],
  ["NAT64 of a private address", "https://[64:ff9b::a00:1]/hook"],
  ["6to4 of 192.168.1.1", "https://[2002:c0a8:101::1]/hook"],
  ["ftp scheme", "ftp://example.com/hook"],
  ["javascript scheme", "javascript:alert(1)"],
  ["over-long URL", `https://${"a".repeat(3000)}.com/hook`],
  ["resolves to a private address", "https://private-name.example.com/hook"],
  ["one of several answers private", "https://mixed.example.com/hook"],
  ["resolves to nothing", "https://nx.example.com/hook"],
  ["unspecified IPv6", "https://[::]/hook"],
  ["0.0.0.0", "https://0.0.0.0/hook"],
  ["multicast", "https://224.0.0.1/hook"],
  ["localhost over https with a trailing dot", "https://localhost./hook"],
  ["a .internal name", "https://db.internal/hook"],
];

describe("hostile inputs to the webhook endpoints", () => {
  it.each(hostileUrls)("refuses %s", async (_label, url) => {
    setDnsResolver(
      staticResolver({
        "private-name.example.com": { A: ["192.168.1.10"] },
        "mixed.example.com": { A: ["93.184.216.34", "10.1.1.1"] },
      }),
    );
    const a = await createAccount("hostile");
    const res = await call("POST", "/v1/webhooks", { key: a.key, body: { url } });
    expect(res.status, `${url} → ${res.text}`).toBe(422);
    expect(res.body.error.code).toBe("validation_error");
    expect(await countRows("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE account_id = ?", a.account.id)).toBe(0);
  });

  const hostileBodies: [string, unknown, number][] = [
    ["no event types", { url: "https://ok.example.com/h", events: [] }, 422],
    ["an unknown event type", { url: "https://ok.example.com/h", events: ["nope"] }, 422],
    ["an unknown field", { url: "https://ok.example.com/h", admin: true }, 422],
    ["a 501-character description", { url: "https://ok.example.com/h", description: "d".repeat(501) }, 422],
    ["a URL that is a number", { url: 42 }, 422],
    ["another account's inbox", { url: "https://ok.example.com/h", inbox_id: "inbox_00000000000000000000000000" }, 422],
  ];

  it.each(hostileBodies)("refuses a body with %s", async (_label, body, status) => {
    setDnsResolver(staticResolver({ "ok.example.com": { A: ["93.184.216.34"] } }));
    const a = await createAccount("hostile-body");
    const res = await call("POST", "/v1/webhooks", { key: a.key, body });
    expect(res.status, res.text).toBe(status);
    expect(await countRows("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE account_id = ?", a.account.id)).toBe(0);
  });

  it("refuses a body that is not JSON", async () => {
    const a = await createAccount("hostile-json");
    const res = await call("POST", "/v1/webhooks", {
      key: a.key,
      rawBody: '{"url": "https://ok.example.com/h"',
      headers: { "Content-Type": "application/json" },
    });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(await countRows("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE account_id = ?", a.account.id)).toBe(0);
  });
});
