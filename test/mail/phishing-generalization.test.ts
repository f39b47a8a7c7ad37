import { describe, expect, it } from "vitest";
import { scorePhishing } from "../../src/features/sender-auth/phishing";
import labelled from "../fixtures/phishing/labelled.json";

interface Labelled {
  id: string;
  label: "ham" | "phish";
  batch?: string;
  subject: string;
  text?: string;
  html?: string;
  attachments?: { filename: string; contentType: string; text?: string }[];
}

const verdict = (m: Labelled) =>
  scorePhishing({ subject: m.subject, text: m.text ?? null, html: m.html ?? null, attachments: m.attachments ?? [] });

describe("the outbound phishing block generalizes (issue 20)", () => {
  const fresh = (labelled.messages as Labelled[]).filter((m) => m.batch === "issue-20");

  it("blocks the three lures it let through before: wallet recovery phrase, customs fee behind a shortener, userinfo host with a scripted HTML attachment", () => {
    const byId = new Map(fresh.map((m) => [m.id, m]));
    const names = (id: string) => verdict(byId.get(id) as Labelled).signals.map((s) => s.name);
    expect(verdict(byId.get("phish-i20-01") as Labelled).blocked).toBe(true);
    expect(names("phish-i20-01")).toContain("wallet_phrase_request");
    expect(verdict(byId.get("phish-i20-02") as Labelled).blocked).toBe(true);
    expect(names("phish-i20-02")).toEqual(expect.arrayContaining(["url_shortener", "shortener_with_request"]));
    expect(verdict(byId.get("phish-i20-03") as Labelled).blocked).toBe(true);
    expect(names("phish-i20-03")).toEqual(expect.arrayContaining(["url_userinfo", "scripted_markup_attachment"]));
  });

  it("rates on the lures written after the rules are reported separately", () => {
    const phish = fresh.filter((m) => m.label === "phish");
    const ham = fresh.filter((m) => m.label === "ham");
    expect(phish.length).toBeGreaterThanOrEqual(10);
    expect(ham.length).toBeGreaterThanOrEqual(10);
    const caught = phish.filter((m) => verdict(m).blocked);
    const falsePositives = ham.filter((m) => verdict(m).blocked);
    console.log(
      `phishing scorer, issue-20 batch: detection ${caught.length}/${phish.length}, false positives ${falsePositives.length}/${ham.length}`,
    );
    expect(caught.length / phish.length).toBeGreaterThanOrEqual(0.9);
    expect(falsePositives.map((m) => m.id)).toEqual([]);
  });

  it("the shared families fire on their own tricks and not on advice", () => {
    const names = (text: string, attachments: Labelled["attachments"] = []) =>
      verdict({ id: "x", label: "ham", subject: "", text, attachments }).signals.map((s) => s.name);
    expect(names("Open https://login.example@evil.example/x")).toContain("url_userinfo");
    expect(names("Never share your seed phrase with anyone.")).toEqual([]);
    expect(names("Please send us your password.")).toContain("secret_disclosure_request");
    expect(names("x", [{ filename: "a.svg", contentType: "image/svg+xml", text: "<svg onload='x()'/>" }])).toContain(
      "scripted_markup_attachment",
    );
    expect(names("x", [{ filename: "a.html", contentType: "text/html", text: "<h1>Report</h1>" }])).toEqual([]);
  });
});
