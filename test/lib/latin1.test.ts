import { describe, expect, it } from "vitest";
import { bytesToLatin1, latin1ToBytes } from "../../src/lib/crypto";

// bytesToLatin1 decodes through UTF-16 (each byte widened to one code unit) for speed; these pin
// the property every raw-MIME reader relies on: one char per byte, char code = byte value.
describe("bytesToLatin1", () => {
  it("maps every byte value to the char with that code (0x80–0x9F are not windows-1252)", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const s = bytesToLatin1(all);
    expect(s.length).toBe(256);
    for (let i = 0; i < 256; i++) expect(s.charCodeAt(i)).toBe(i);
    expect(latin1ToBytes(s)).toEqual(all);
  });

  it("keeps a leading 0xFE 0xFF / 0xFF 0xFE (no byte-order mark is taken off)", () => {
    for (const bom of [
      [0xfe, 0xff],
      [0xff, 0xfe],
      [0xef, 0xbb, 0xbf],
    ]) {
      const bytes = Uint8Array.from([...bom, 0x41]);
      expect(latin1ToBytes(bytesToLatin1(bytes))).toEqual(bytes);
    }
  });

  it("round-trips large, odd-length inputs and subarray views exactly", () => {
    const big = new Uint8Array(200_003);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919 + (i >> 8)) & 0xff;
    expect(latin1ToBytes(bytesToLatin1(big))).toEqual(big);
    const view = big.subarray(12_345, 99_999);
    const s = bytesToLatin1(view);
    expect(s.length).toBe(view.length);
    expect(latin1ToBytes(s)).toEqual(view);
    expect(bytesToLatin1(new Uint8Array(0))).toBe("");
    expect(bytesToLatin1(view.buffer.slice(12_345, 12_350))).toBe(bytesToLatin1(big.subarray(12_345, 12_350)));
  });
});
