/**
 * Issue 16, item 23: an attachment is exactly its part's decoded content, for every transfer
 * encoding and content type (text/* and message/* parts served as attachments included); an
 * empty Subject reads as "", a missing one as null.
 */
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { fromBase64 } from "../../src/lib/crypto";
import { parseMail } from "../../src/mail/parse";
import { decodeBase64 } from "../../src/mail/raw-parts";
import { createAccount } from "../helpers/accounts";
import { messageRow } from "../helpers/db";
import { relaySignature } from "../helpers/relay";

const latin1 = (bytes: Uint8Array) => String.fromCharCode(...bytes);
const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const b64 = (b: Uint8Array) => btoa(latin1(b));

const binary = Uint8Array.from([0, 1, 13, 10, 10, 13, 255, 254, 61, 13, 10, 45, 45, 32, 9, 128]);
const csv = "a,b\r\n1,2\r\n3,4";
const calendar = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n\r\n";
const inner = "From: x@example.org\r\nSubject: inner\r\n\r\nInner body\r\nline 2";
const png = Uint8Array.from({ length: 300 }, (_, i) => (i * 37) % 256);
const utf8 = new TextEncoder().encode("Grüße\r\nzweite Zeile");

function message(): Uint8Array {
  const part = (headers: string[], body: string) => [...headers, "", body].join("\r\n");
  const parts = [
    part(["Content-Type: text/plain; charset=utf-8"], "The body."),
    part(
      [
        'Content-Type: application/octet-stream; name="b.bin"',
        'Content-Disposition: attachment; filename="b.bin"',
        "Content-Transfer-Encoding: binary",
      ],
      latin1(binary),
    ),
    part(
      [
        'Content-Type: text/csv; name="t.csv"',
        'Content-Disposition: attachment; filename="t.csv"',
        "Content-Transfer-Encoding: 7bit",
      ],
      csv,
    ),
    part(
      ['Content-Type: text/calendar; method=REQUEST; name="i.ics"', "Content-Transfer-Encoding: base64"],
      b64(bytes(calendar)),
    ),
    part(
      ['Content-Type: message/rfc822; name="fwd.eml"', 'Content-Disposition: attachment; filename="fwd.eml"'],
      inner,
    ),
    part(
      [
        'Content-Type: text/plain; name="qp.txt"',
        'Content-Disposition: attachment; filename="qp.txt"',
        "Content-Transfer-Encoding: quoted-printable",
      ],
      "a=3Db=\r\nc\r\nline2  ",
    ),
    part(
      ['Content-Type: image/png; name="p.png"', "Content-Transfer-Encoding: base64"],
      b64(png).replace(/(.{76})/g, "$1\r\n"),
    ),
    part(
      [
        'Content-Type: text/plain; charset=utf-8; name="u.txt"',
        'Content-Disposition: attachment; filename="u.txt"',
        "Content-Transfer-Encoding: 8bit",
      ],
      latin1(utf8),
    ),
  ];
  const head = [
    "From: a@example.org",
    "To: b@example.org",
    "Subject:",
    `Message-ID: <${crypto.randomUUID()}@example.org>`,
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="XyZ"',
    "",
    "",
  ].join("\r\n");
  return bytes(`${head}--XyZ\r\n${parts.join("\r\n--XyZ\r\n")}\r\n--XyZ--\r\n`);
}

const expected: [string, Uint8Array][] = [
  ["application/octet-stream", binary],
  ["text/csv", bytes(csv)],
  ["text/calendar", bytes(calendar)],
  ["message/rfc822", bytes(inner)],
  ["text/plain", bytes("a=bc\r\nline2")],
  ["image/png", png],
  ["text/plain", utf8],
];

describe("byte-exact attachments", () => {
  it("gives every part's decoded bytes exactly, whatever its encoding and type", async () => {
    const parsed = await parseMail(message());
    expect(parsed.attachments.map((a) => a.contentType)).toEqual(expected.map(([t]) => t));
    parsed.attachments.forEach((a, i) => {
      expect(latin1(a.content), `${i}: ${a.contentType}`).toBe(latin1(expected[i]?.[1] as Uint8Array));
    });
  });

  it('stores and serves those bytes, and an empty Subject as ""', async () => {
    const a = await createAccount("exact");
    const raw = message();
    const res = await exports.default.fetch(
      new Request(`http://localhost/webhooks/inbound/raw?to=${encodeURIComponent(a.inbox.address)}`, {
        method: "POST",
        headers: { "CF-Connecting-IP": "192.0.2.99", ...(await relaySignature(raw)) },
        body: raw,
      }),
    );
    expect(res.status).toBe(202);
    const { data } = (await res.json()) as { data: { message_id: string } };
    const row = await messageRow(data.message_id);
    expect(row?.subject).toBe("");
    const atts = JSON.parse(row?.attachments as string) as { id: string; content_type: string }[];
    expect(atts.map((x) => x.content_type)).toEqual(expected.map(([t]) => t));
    for (const [i, att] of atts.entries()) {
      const dl = await exports.default.fetch(
        new Request(`http://localhost/v1/inboxes/${a.inbox.id}/messages/${data.message_id}/attachments/${att.id}`, {
          headers: { Authorization: `Bearer ${a.key}` },
        }),
      );
      expect(dl.status).toBe(200);
      expect(latin1(new Uint8Array(await dl.arrayBuffer())), att.content_type).toBe(
        latin1(expected[i]?.[1] as Uint8Array),
      );
    }
  });

  it("reads a missing Subject as null", async () => {
    const parsed = await parseMail(bytes("From: a@example.org\r\nTo: b@example.org\r\n\r\nNo subject.\r\n"));
    expect(parsed.subject).toBeNull();
    const empty = await parseMail(bytes("From: a@example.org\r\nSubject:   \r\n\r\nEmpty.\r\n"));
    expect(empty.subject).toBe("");
  });
});

describe("base64 parts, well-formed or not", () => {
  // raw-parts decodes well-formed base64 as it is and falls back to stripping stray characters:
  // both must give the same bytes the forgiving decode always gave.
  const payload = Uint8Array.from({ length: 700 }, (_, i) => (i * 131 + 7) % 256);
  const wrapped = b64(payload).replace(/.{1,76}/g, "$&\r\n");
  const cases: [string, string][] = [
    ["folded at 76 with CRLF", wrapped],
    ["folded with bare LF and trailing blanks", wrapped.replace(/\r\n/g, " \n")],
    ["a stray character inside", `${wrapped.slice(0, 40)}!${wrapped.slice(40)}`],
    ["padding missing", b64(payload).replace(/=+$/, "")],
  ];
  for (const [name, body] of cases) {
    it(`decodes an attachment ${name}`, async () => {
      const raw = bytes(
        [
          "From: a@example.org",
          "Subject: b64",
          'Content-Type: multipart/mixed; boundary="b"',
          "",
          "--b",
          "Content-Type: text/plain",
          "",
          "Body.",
          "--b",
          'Content-Type: application/octet-stream; name="p.bin"',
          'Content-Disposition: attachment; filename="p.bin"',
          "Content-Transfer-Encoding: base64",
          "",
          body,
          "--b--",
          "",
        ].join("\r\n"),
      );
      const parsed = await parseMail(raw);
      expect(parsed.attachments).toHaveLength(1);
      expect(Array.from(parsed.attachments[0]?.content ?? [])).toEqual(Array.from(payload));
    });
  }
});

describe("the raw walk's base64 decoding", () => {
  // Well-formed text is decoded as it is; anything else falls back to stripping what is not in
  // the alphabet. Both must give the bytes the forgiving decode (strip, then decode) gives.
  const stripped = (text: string): Uint8Array | null => {
    const clean = text.replace(/[^A-Za-z0-9+/]/g, "");
    return clean.length % 4 === 1 ? null : fromBase64(clean);
  };
  it("equals strip-then-decode on 5,000 random base64-like texts", () => {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const noise = [" ", "\t", "\r\n", "\n", "=", "==", "-", "_", "!", "\u000b", "\u00a0", "."];
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    let native = 0;
    for (let i = 0; i < 5000; i++) {
      let text = btoa(String.fromCharCode(...Array.from({ length: rand(60) }, () => rand(256))));
      if (rand(2)) text = text.replace(/.{1,8}/g, (m) => m + (rand(3) ? "" : "\r\n"));
      if (rand(3) === 0) {
        const at = rand(text.length + 1);
        text = text.slice(0, at) + (noise[rand(noise.length)] ?? "") + text.slice(at);
      }
      if (rand(5) === 0) text = text.replace(/=+$/, "");
      if (rand(7) === 0) text += alphabet[rand(64)];
      const got = decodeBase64(text);
      const want = stripped(text);
      expect(got === null ? null : Array.from(got), JSON.stringify(text)).toEqual(
        want === null ? null : Array.from(want),
      );
      try {
        fromBase64(text);
        native++;
      } catch {
        // the fallback path
      }
    }
    // Both paths were exercised.
    expect(native).toBeGreaterThan(500);
    expect(native).toBeLessThan(4500);
  });
});
