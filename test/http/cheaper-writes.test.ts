import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";

// Issue 17 item 4: the send policy writes nothing of its own. Its spray fingerprint joins the
// batch that stores the accepted message, so a send refused after the policy (size, recipients,
// reputation) leaves no fingerprint behind, and an accepted one leaves exactly one.

const fingerprints = async (accountId: string) =>
  (
    await env.DB.prepare("SELECT new_recipients FROM send_fingerprints WHERE account_id = ?")
      .bind(accountId)
      .all<{ new_recipients: string }>()
  ).results.map((r) => JSON.parse(r.new_recipients) as string[]);

describe("send acceptance writes the policy's fingerprint with the message", () => {
  it("an accepted send stores one fingerprint, in the same batch as the message", async () => {
    const a = await createAccount("cheap-ok");
    const sent = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: ["New.Person@example.org"], subject: "Hello", body_text: "First contact." },
    });
    expect(sent.status).toBe(202);
    expect(await fingerprints(a.account.id)).toEqual([["new.person@example.org"]]);
    const stored = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE id = ?")
      .bind(sent.body.data.id)
      .first<{ n: number }>();
    expect(stored?.n).toBe(1);
  });

  it("a send refused after the policy leaves no fingerprint", async () => {
    const a = await createAccount("cheap-refused");
    const list = (p: string, n: number) => Array.from({ length: n }, (_, i) => `${p}${i}@example.org`);
    const tooMany = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: list("t", 20), cc: list("c", 20), bcc: list("b", 11), subject: "x", body_text: "x" },
    });
    expectError(tooMany, 422, "too_many_recipients");
    expect(await fingerprints(a.account.id)).toEqual([]);
  });
});
