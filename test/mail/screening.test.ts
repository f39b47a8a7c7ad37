import { describe, expect, it } from "vitest";
import { MAX_SCREENED_CHARS, safeText, screenMessage, splitHtml } from "../../src/features/screening/screener";
import { LABELLED, type LabelledMessage } from "../fixtures/screening/labelled";

const screen = (m: LabelledMessage) =>
  screenMessage({
    subject: m.subject,
    text: m.text ?? null,
    html: m.html ?? null,
    fromAddress: m.fromAddress,
    fromName: m.fromName ?? null,
    authentication: m.authentication ?? null,
    attachments: m.attachments ?? [],
    knownSenders: m.knownSenders,
    now: Date.UTC(2026, 11, 5),
  });

/** Removes every fenced span (and the notes), leaving what a model reads as plain content. */
function unfenced(text: string): string {
  return text
    .replace(/\[\[mailbot: suspicious text \([^)]*\) begins\]\][\s\S]*?\[\[mailbot: suspicious text ends\]\]/g, "")
    .replace(/\[\[mailbot:[^\]]*\]\]/g, "");
}

describe("the labelled set (issue 20)", () => {
  const hostile = LABELLED.filter((m) => m.hostile);
  const ordinary = LABELLED.filter((m) => !m.hostile);
  const results = new Map(LABELLED.map((m) => [m.id, screen(m)]));

  it("has at least 30 hostile messages across every family and 30 ordinary ones", () => {
    expect(hostile.length).toBeGreaterThanOrEqual(30);
    expect(ordinary.length).toBeGreaterThanOrEqual(30);
    const families = new Set(hostile.map((m) => m.family));
    for (const f of ["hidden", "invisible", "instruction", "exfiltration", "sender", "encoded", "lure"]) {
      expect(families, f).toContain(f);
    }
    expect(new Set(LABELLED.map((m) => m.id)).size).toBe(LABELLED.length);
  });

  it("flags at least 95% of hostile mail, at most 5% of ordinary mail, and no ordinary mail as dangerous", () => {
    const flagged = hostile.filter((m) => results.get(m.id)?.verdict !== "clean");
    const falsePositives = ordinary.filter((m) => results.get(m.id)?.verdict !== "clean");
    const dangerous = ordinary.filter((m) => results.get(m.id)?.verdict === "dangerous");
    const perFamily = Object.fromEntries(
      [...new Set(hostile.map((m) => m.family))].map((f) => {
        const of = hostile.filter((m) => m.family === f);
        return [f, `${of.filter((m) => results.get(m.id)?.verdict !== "clean").length}/${of.length}`];
      }),
    );
    console.log("screening labelled set", {
      detection: `${flagged.length}/${hostile.length}`,
      false_positives: `${falsePositives.length}/${ordinary.length}`,
      per_family: perFamily,
      missed: hostile.filter((m) => !flagged.includes(m)).map((m) => m.id),
      flagged_ordinary: falsePositives.map((m) => m.id),
    });
    expect(flagged.length / hostile.length).toBeGreaterThanOrEqual(0.95);
    expect(falsePositives.length / ordinary.length).toBeLessThanOrEqual(0.05);
    expect(dangerous.map((m) => m.id)).toEqual([]);
  });

  it("every verdict explains itself: signal ids are family-scoped with evidence and weight", () => {
    for (const [id, r] of results) {
      expect(r.version).toMatch(/^\d{4}-\d{2}-\d{2}\.\d+$/);
      expect(r.score, id).toBe(r.signals.reduce((s, x) => s + x.weight, 0));
      for (const s of r.signals) {
        expect(s.id).toMatch(/^(hidden|invisible|instruction|exfiltration|sender|encoded|lure)\.[a-z0-9_]+$/);
        expect(s.evidence.length).toBeGreaterThan(0);
        expect(s.evidence.length).toBeLessThanOrEqual(120);
      }
    }
  });

  it("safe_text of each hostile message holds none of its hidden or invisible content unfenced", () => {
    const invisible = /[\u200B\u2060\u202A-\u202E\u2066-\u2069]|[\u{E0000}-\u{E007F}]|[\u{E0100}-\u{E01EF}]/u;
    for (const m of hostile) {
      const safe = safeText({ text: m.text ?? null, html: m.html ?? null });
      const open = unfenced(safe);
      expect(invisible.test(safe), m.id).toBe(false);
      for (const h of m.hidden ?? []) expect(open.includes(h), `${m.id}: ${h}`).toBe(false);
      // Instructions a human can see stay readable, but only inside a fence.
      if (m.family === "instruction" && m.text && !m.attachments) {
        expect(safe, m.id).toContain("[[mailbot: suspicious text (instruction.");
      }
    }
  });

  it("safe_text keeps what a human saw: links as text <url>, preheaders out, emoji joiners intact", () => {
    const news = LABELLED.find((m) => m.id === "o-newsletter-preheader") as LabelledMessage;
    const safe = safeText({ text: null, html: news.html ?? null });
    expect(safe).toContain("Read the issue <https://this-week.example/issue/512>");
    expect(safe).not.toContain("Five new crates, a compiler release");
    expect(safe).toContain("hidden content removed (display:none)");
    const emoji = LABELLED.find((m) => m.id === "o-emoji-zwj") as LabelledMessage;
    expect(safeText({ text: emoji.text ?? null, html: null })).toContain("👨\u200D👩\u200D👧\u200D👦");
  });
});

describe("screening cost is bounded", () => {
  it("reads at most MAX_SCREENED_CHARS of a hostile 5 MiB body of unclosed tags and still answers", () => {
    const body = "<div style='display:none'><a href='x".repeat((5 * 1024 * 1024) / 36);
    const r = screenMessage({
      subject: "x",
      text: "A".repeat(3 * 1024 * 1024),
      html: body,
      fromAddress: "a@b.example",
      fromName: null,
      authentication: null,
      attachments: [],
      now: 0,
    });
    expect(["clean", "suspicious", "dangerous"]).toContain(r.verdict);
    expect(splitHtml(body).visible.length).toBeLessThanOrEqual(MAX_SCREENED_CHARS);
  });
});
