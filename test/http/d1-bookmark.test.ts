import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import type { AppEnv } from "../../src/http/app-env";
import { d1Session } from "../../src/http/d1-session";
import { createAccount } from "../helpers/accounts";
import { call } from "../helpers/api";

/**
 * Issue 17 item 6: D1 read replication through the Sessions API. Locally there is one database
 * (no replicas), so this checks the contract: a response carries the session's bookmark in
 * X-Mailbot-Bookmark, a request may hand it back, and reads then see the writes it covers.
 */
const BOOKMARK = /^[0-9a-f]+(?:-[0-9a-f]+)+$/i;

function bookmarkOf(headers: Headers): string {
  const value = headers.get("X-Mailbot-Bookmark");
  expect(value).toMatch(BOOKMARK);
  return value as string;
}

/** D1 bookmarks order by their first fields (hex, fixed width). */
function notOlder(later: string, earlier: string): boolean {
  return later.localeCompare(earlier) >= 0;
}

describe("X-Mailbot-Bookmark", () => {
  it("a write returns a bookmark; a read that hands it back sees the write and returns one at least as new", async () => {
    const a = await createAccount("bookmark");
    const created = await call("POST", "/v1/inboxes", { key: a.key, body: { username: `bm${Date.now()}` } });
    expect(created.status, created.text).toBe(201);
    const afterWrite = bookmarkOf(created.headers);

    const read = await call("GET", `/v1/inboxes/${created.body.data.id}`, {
      key: a.key,
      headers: { "X-Mailbot-Bookmark": afterWrite },
    });
    expect(read.status, read.text).toBe(200);
    expect(read.body.data.id).toBe(created.body.data.id);
    const afterRead = bookmarkOf(read.headers);
    expect(notOlder(afterRead, afterWrite)).toBe(true);

    // A second write moves the bookmark forward.
    const again = await call("POST", "/v1/inboxes", { key: a.key, body: { username: `bm2${Date.now()}` } });
    expect(again.status, again.text).toBe(201);
    expect(notOlder(bookmarkOf(again.headers), afterWrite)).toBe(true);
    expect(bookmarkOf(again.headers)).not.toBe(afterWrite);
  });

  it("a read without a bookmark gets one too; a malformed bookmark is ignored (served from the primary), never a failure", async () => {
    const a = await createAccount("bookmark-plain");
    const list = await call("GET", "/v1/inboxes", { key: a.key });
    expect(list.status).toBe(200);
    bookmarkOf(list.headers);
    for (const bad of ["not a bookmark", "'; DROP TABLE accounts; --", "x".repeat(500)]) {
      const res = await call("GET", "/v1/inboxes", { key: a.key, headers: { "X-Mailbot-Bookmark": bad } });
      expect(res.status, res.text).toBe(200);
      expect(res.body.data.map((i: { id: string }) => i.id)).toContain(a.inbox.id);
      bookmarkOf(res.headers);
    }
  });

  it("errors carry it as well (the request read D1 before failing)", async () => {
    const a = await createAccount("bookmark-404");
    const res = await call("GET", "/v1/inboxes/inb_doesnotexist0000000000", { key: a.key });
    expect(res.status).toBe(404);
    bookmarkOf(res.headers);
  });

  it("a request that touches no D1 carries none", async () => {
    const res = await call("GET", "/health");
    expect(res.headers.get("X-Mailbot-Bookmark")).toBeNull();
  });
});

describe("X-Mailbot-D1-* accounting (development only, opt-in)", () => {
  it("is added only when the request asks with X-Mailbot-D1-Stats: 1, and then counts the request's statements", async () => {
    const a = await createAccount("d1-stats");
    const plain = await call("GET", `/v1/inboxes/${a.inbox.id}`, { key: a.key });
    expect(plain.status, plain.text).toBe(200);
    expect(plain.headers.get("X-Mailbot-D1-Queries")).toBeNull();
    expect(plain.headers.get("X-Mailbot-D1-Rows-Read")).toBeNull();

    const asked = await call("GET", `/v1/inboxes/${a.inbox.id}`, {
      key: a.key,
      headers: { "X-Mailbot-D1-Stats": "1" },
    });
    expect(asked.status, asked.text).toBe(200);
    expect(asked.body.data.id).toBe(a.inbox.id);
    expect(Number(asked.headers.get("X-Mailbot-D1-Queries"))).toBeGreaterThanOrEqual(1);
    expect(Number(asked.headers.get("X-Mailbot-D1-Rows-Read"))).toBeGreaterThanOrEqual(1);
    expect(asked.headers.get("X-Mailbot-D1-Rows-Written")).toBe("0");
  });
});

describe("d1Session with the console's bookmark cookie (a recording D1 stub)", () => {
  async function run(
    method: string,
    path: string,
    opts: { cookie?: string; header?: string; answer?: string | null; fail?: boolean } = {},
  ) {
    const constraints: string[] = [];
    const DB = {
      withSession(constraint: string) {
        constraints.push(constraint);
        return { getBookmark: () => opts.answer ?? null };
      },
    };
    const app = new Hono<AppEnv>();
    app.use("*", d1Session);
    app.all("*", (c) => {
      if (opts.fail) throw new Error("the replica refused the bookmark");
      return c.text("ok");
    });
    app.onError((_err, c) => c.text("failed", 500));
    const headers: Record<string, string> = {};
    if (opts.cookie) headers.Cookie = opts.cookie;
    if (opts.header) headers["X-Mailbot-Bookmark"] = opts.header;
    const res = await app.request(path, { method, headers }, { DB, ENVIRONMENT: "production" } as never);
    return { res, constraints, cookies: res.headers.getSetCookie().filter((c) => c.startsWith("mb_bookmark=")) };
  }

  it("reads the cookie on console GETs only; writes start on the primary; junk is ignored", async () => {
    expect((await run("GET", "/dashboard/x", { cookie: "mb_bookmark=00000000-00000005" })).constraints).toEqual([
      "00000000-00000005",
    ]);
    expect((await run("GET", "/dashboard/x", { cookie: "mb_bookmark=nope" })).constraints).toEqual(["first-primary"]);
    expect((await run("GET", "/dashboard/x")).constraints).toEqual(["first-unconstrained"]);
    expect((await run("POST", "/dashboard/x", { cookie: "mb_bookmark=00000000-00000005" })).constraints).toEqual([
      "first-primary",
    ]);
    // The API never reads or sets it.
    const api = await run("GET", "/v1/inboxes", {
      cookie: "mb_bookmark=00000000-00000005",
      answer: "00000000-00000009",
    });
    expect(api.constraints).toEqual(["first-unconstrained"]);
    expect(api.cookies).toEqual([]);
  });

  it("moves the cookie forward only, Secure outside development, and drops it when a request that used it failed", async () => {
    const forward = await run("GET", "/dashboard/x", {
      cookie: "mb_bookmark=00000000-00000005",
      answer: "00000000-00000009",
    });
    expect(forward.cookies).toHaveLength(1);
    expect(forward.cookies[0]).toMatch(/^mb_bookmark=00000000-00000009;/);
    expect(forward.cookies[0]).toMatch(/Secure/);
    expect(forward.cookies[0]).toMatch(/HttpOnly/);
    const older = await run("GET", "/dashboard/x", {
      cookie: "mb_bookmark=00000000-00000009",
      answer: "00000000-00000005",
    });
    expect(older.cookies).toEqual([]);
    const failed = await run("GET", "/dashboard/x", { cookie: "mb_bookmark=00000000-00000009", fail: true });
    expect(failed.res.status).toBe(500);
    expect(failed.cookies).toHaveLength(1);
    expect(failed.cookies[0]).toMatch(/^mb_bookmark=;.*Max-Age=0/);
  });
});
