/** IANA's special-purpose address registries as one table: every row, and the embedded-IPv4 forms. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from "../lib/core/address.ts";
import {
  nonGlobalRange,
  SPECIAL_PURPOSE_ADDRESSES,
  type SpecialRange,
  specialRange,
} from "../lib/core/special_addresses.ts";

const ip = (text: string) => parseIPv4(text) ?? parseIPv6(text)!;
const show = (b: Uint8Array) => (b.length === 4 ? formatIPv4(b) : formatIPv6(b));

/** An address that this row, and no more specific one, decides: the block's first, second or last address. */
function sampleOf(row: SpecialRange): Uint8Array {
  const first = row.bytes.slice();
  const second = row.bytes.slice();
  second[second.length - 1] |= 1;
  const last = row.bytes.slice();
  for (let bit = row.prefix; bit < last.length * 8; bit++) last[bit >> 3] |= 0x80 >> (bit & 7);
  const own = [second, first, last].find((a) => specialRange(a) === row);
  assert.ok(own, `no address of ${row.block} is decided by its own row`);
  return own;
}

/** `v4` embedded in a row's IPv6 form. */
function embed(row: SpecialRange, v4: Uint8Array): Uint8Array {
  const out = row.bytes.slice();
  if (row.embeds === "6to4") out.set(v4, 2);
  else if (row.embeds === "teredo") {
    out.set(ip("8.8.4.4"), 4); // a public Teredo server
    out.set(v4.map((b) => b ^ 0xff), 12); // the client, stored inverted
  } else out.set(v4, 12);
  return out;
}

describe("special-purpose address registries", () => {
  it("the table has every row the registries list, each parsed", () => {
    assert.equal(SPECIAL_PURPOSE_ADDRESSES.length, 26 + 28);
    for (const r of SPECIAL_PURPOSE_ADDRESSES) {
      assert.ok(r.prefix >= 0 && r.prefix <= r.bytes.length * 8, r.block);
      assert.ok(r.name.length > 0 && /^RFC \d+$/.test(r.rfc), r.block);
    }
  });

  for (const row of SPECIAL_PURPOSE_ADDRESSES) {
    it(`${row.block} ${row.name} (${row.rfc}): ${row.embeds ? `judged by its embedded IPv4` : row.global ? "reachable" : "refused"}`, () => {
      if (!row.embeds) {
        const a = sampleOf(row);
        assert.equal(nonGlobalRange(a), row.global ? null : row, show(a));
        return;
      }
      const inner = embed(row, ip("127.0.0.1"));
      assert.equal(nonGlobalRange(inner)?.name, "Loopback", show(inner));
      const outer = embed(row, ip("8.8.8.8"));
      assert.equal(nonGlobalRange(outer), row.global ? null : row, show(outer));
    });
  }

  it("the cases the probe found: documentation, 6to4 relay, Teredo and 6to4 of loopback, local NAT64", () => {
    const refused: [string, string][] = [
      ["192.0.2.1", "Documentation (TEST-NET-1)"],
      ["198.51.100.7", "Documentation (TEST-NET-2)"],
      ["203.0.113.200", "Documentation (TEST-NET-3)"],
      ["192.88.99.1", "Deprecated (6to4 Relay Anycast)"],
      ["2001:db8::1", "Documentation"],
      ["3fff:fff::1", "Documentation"],
      ["2002:7f00:1::1", "Loopback"], // 6to4 of 127.0.0.1
      ["2002:a00:1::", "Private-Use"], // 6to4 of 10.0.0.1
      ["2001:0:808:404:0:0:80ff:fffe", "Loopback"], // Teredo, client 127.0.0.1
      ["64:ff9b:1::a00:1", "IPv4-IPv6 Translat. (local use)"],
      ["64:ff9b::7f00:1", "Loopback"],
      ["::ffff:127.0.0.1", "Loopback"],
      ["::ffff:192.168.1.1", "Private-Use"],
      ["::8.8.8.8", "IPv4-Compatible IPv6 Address (deprecated)"],
    ];
    for (const [text, name] of refused) assert.equal(nonGlobalRange(ip(text))?.name, name, text);
    const reachable = [
      "8.8.8.8",
      "192.0.0.9",
      "2606:4700::1111",
      "2002:808:808::1",
      "::ffff:8.8.8.8",
      "64:ff9b::808:808",
    ];
    for (const text of reachable) assert.equal(nonGlobalRange(ip(text)), null, text);
  });

  it("the most specific row decides (a reachable /32 inside a refused /24)", () => {
    assert.equal(nonGlobalRange(ip("192.0.0.10")), null);
    assert.equal(nonGlobalRange(ip("192.0.0.11"))?.name, "IETF Protocol Assignments");
    assert.equal(nonGlobalRange(ip("2001:1::1")), null);
    assert.equal(nonGlobalRange(ip("2001:1::4"))?.name, "IETF Protocol Assignments");
  });
});
