import { describe, expect, it } from "vitest";
import { typeMatches } from "../../src/lib/event-stream";

describe("typeMatches (the one matcher of event-type patterns)", () => {
  it("matches exact types, * and globs", () => {
    expect(typeMatches("message.received", "message.received")).toBe(true);
    expect(typeMatches("message.received", "message.sent")).toBe(false);
    expect(typeMatches("*", "domain.verified")).toBe(true);
    expect(typeMatches("message.*", "message.sent")).toBe(true);
    expect(typeMatches("message.*", "message.")).toBe(true);
    expect(typeMatches("message.*", "inbox.disabled")).toBe(false);
    expect(typeMatches("*.sent", "message.sent")).toBe(true);
    expect(typeMatches("*.sent", "message.sentx")).toBe(false);
    expect(typeMatches("m*e*d", "message.received")).toBe(true);
    expect(typeMatches("m*e*d", "message.bounced")).toBe(true);
    expect(typeMatches("m*e*d", "message.sent")).toBe(false);
    expect(typeMatches("a*b*c", "abbbc")).toBe(true);
    expect(typeMatches("a*b*c", "acb")).toBe(false);
    expect(typeMatches("**", "")).toBe(true);
    expect(typeMatches("a", "")).toBe(false);
    expect(typeMatches("", "a")).toBe(false);
  });

  it("stays linear on patterns of many stars (a backtracking regex took minutes on these)", () => {
    // 14 stars took 2.2 s and 18 over 60 s as a regex; 60 would not finish within this test's timeout.
    const stars = "*".repeat(60);
    expect(typeMatches(`${stars}z`, "message.received.and.then.some.more.characters")).toBe(false);
    expect(typeMatches(`${stars}d`, "message.received")).toBe(true);
    expect(typeMatches(`${"*a".repeat(30)}z`, "a".repeat(64))).toBe(false);
  });
});
