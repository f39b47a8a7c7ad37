import { describe, expect, it } from "vitest";
import { call, registerAccount } from "../helpers/api";

describe("smoke", () => {
  it("registers and lists inboxes", async () => {
    const a = await registerAccount();
    const res = await call("GET", "/v1/inboxes", { key: a.key });
    expect(res.status, res.text).toBe(200);
    expect(res.body.data[0].address).toMatch(/^sandbox--[0-9a-z]{8}@mailbot\.test$/);
  });
});
