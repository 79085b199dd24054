/** IP address text <-> bytes: strict parsing, RFC 5952 canonical output. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { canonicalIP, formatIPv4, formatIPv6, hostType, parseIPv4, parseIPv6 } from "../lib/core/address.ts";
import { hex, toHex } from "./_hex.ts";

/** The parse result as hex, or null, so failures print readably. */
const v4 = (text: string) => {
  const b = parseIPv4(text);
  return b && toHex(b);
};
const v6 = (text: string) => {
  const b = parseIPv6(text);
  return b && toHex(b);
};
const wire = (text: string) => toHex(hex(text));

describe("parseIPv4", () => {
  it("parses dotted quads", () => {
    assert.equal(v4("1.2.3.4"), wire("01 02 03 04"));
    assert.equal(v4("127.0.0.1"), wire("7f 00 00 01"));
    assert.equal(v4("0.0.0.0"), wire("00 00 00 00"));
    assert.equal(v4("255.255.255.255"), wire("ff ff ff ff"));
    assert.equal(v4("192.0.2.10"), wire("c0 00 02 0a"));
  });

  it("rejects leading zeros, octets over 255, shorthand and junk", () => {
    for (
      const bad of [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.",
        ".1.2.3",
        "1..2.3",
        "256.0.0.1",
        "1.2.3.256",
        "999.1.1.1",
        "01.2.3.4",
        "1.2.3.04",
        "00.0.0.0",
        "1.2.3.000",
        "0x7f.0.0.1",
        "127.1",
        "2130706433",
        "1e2.0.0.1",
        "-1.2.3.4",
        "+1.2.3.4",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1.2.3.4\n",
        "1.2.3.a",
        "１.2.3.4",
        "1.2.3.4/32",
      ]
    ) {
      assert.equal(v4(bad), null, JSON.stringify(bad));
    }
  });

  it("agrees with the plain definition (four 0-255 decimals without leading zeros) on any near-miss text", () => {
    const reference = (text: string) => {
      const parts = text.split(".");
      if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255)) {
        return null;
      }
      return toHex(Uint8Array.from(parts.map(Number)));
    };
    const near = fc.array(fc.constantFrom(..."0123456789...25 x"), { maxLength: 18 }).map((a) => a.join(""));
    fc.assert(fc.property(near, (text) => assert.equal(v4(text), reference(text), JSON.stringify(text))), {
      numRuns: 20_000,
    });
  });
});

describe("parseIPv6", () => {
  it("parses the full form, upper or lower case, with or without leading zeros in a group", () => {
    const expected = wire("20010db8 00000000 00000000 00000001");
    assert.equal(v6("2001:db8:0:0:0:0:0:1"), expected);
    assert.equal(v6("2001:0DB8:0000:0000:0000:0000:0000:0001"), expected);
    assert.equal(v6("1:2:3:4:5:6:7:8"), wire("0001 0002 0003 0004 0005 0006 0007 0008"));
    assert.equal(v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), wire("ff".repeat(16)));
  });

  it("expands :: anywhere, for one group or many", () => {
    assert.equal(v6("::"), wire("00".repeat(16)));
    assert.equal(v6("::1"), wire("00".repeat(15) + "01"));
    assert.equal(v6("1::"), wire("0001" + "00".repeat(14)));
    assert.equal(v6("2001:db8::1"), wire("20010db8 00000000 00000000 00000001"));
    assert.equal(v6("2001:db8::1:0:0:1"), wire("20010db8 00000000 00010000 00000001"));
    assert.equal(v6("1:2:3:4:5:6:7::"), wire("0001 0002 0003 0004 0005 0006 0007 0000"));
    assert.equal(v6("::2:3:4:5:6:7:8"), wire("0000 0002 0003 0004 0005 0006 0007 0008"));
    assert.equal(v6("1:2:3::6:7:8"), wire("0001 0002 0003 0000 0000 0006 0007 0008"));
  });

  it("reads an embedded IPv4 address in the last 32 bits", () => {
    assert.equal(v6("::ffff:127.0.0.1"), wire("00000000 00000000 0000ffff 7f000001"));
    assert.equal(v6("::ffff:7f00:1"), v6("::ffff:127.0.0.1"));
    assert.equal(v6("64:ff9b::192.0.2.33"), wire("0064ff9b 00000000 00000000 c0000221"));
    assert.equal(v6("::1.2.3.4"), wire("00000000 00000000 00000000 01020304"));
    assert.equal(v6("1:2:3:4:5:6:1.2.3.4"), wire("0001 0002 0003 0004 0005 0006 0102 0304"));
  });

  it("rejects too many or too few groups, two ::, bad groups and misplaced IPv4", () => {
    for (
      const bad of [
        "",
        ":",
        ":::",
        "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7:8::",
        "::1:2:3:4:5:6:7:8",
        "1::2:3:4:5:6:7:8",
        "1::2::3",
        "::1::",
        "1:::2",
        "12345::1",
        "g::1",
        "1:2:3:4:5:6:7:8:",
        ":1:2:3:4:5:6:7:8",
        ":1::",
        "::1:",
        "1.2.3.4",
        "::ffff:01.2.3.4",
        "::ffff:1.2.3",
        "::ffff:256.1.1.1",
        "::1.2.3.4:5",
        "1.2.3.4::",
        "1.2.3.4::1",
        "1:2:3:4:5:6:7:1.2.3.4",
        "1:2:3:4:5:1.2.3.4",
        "fe80::1%eth0",
        " ::1",
        "::1 ",
        "::-1",
        "::+1",
        "0x1::",
        "example.com",
      ]
    ) {
      assert.equal(v6(bad), null, JSON.stringify(bad));
    }
  });
});

describe("formatIPv6 (RFC 5952)", () => {
  const fmt = (text: string) => formatIPv6(hex(text));

  it("compresses the longest run of zero groups to ::", () => {
    assert.equal(fmt("00".repeat(16)), "::");
    assert.equal(fmt("00".repeat(15) + "01"), "::1");
    assert.equal(fmt("0001" + "00".repeat(14)), "1::");
    assert.equal(fmt("20010db8 00000000 00000000 00000001"), "2001:db8::1");
    assert.equal(fmt("2001 0000 0000 0001 0000 0000 0000 0001"), "2001:0:0:1::1");
    assert.equal(fmt("0000 0000 0003 0004 0005 0006 0007 0008"), "::3:4:5:6:7:8");
    assert.equal(fmt("0001 0002 0003 0004 0005 0006 0000 0000"), "1:2:3:4:5:6::");
  });

  it("takes the first of equally long runs", () => {
    assert.equal(fmt("2001 0db8 0000 0000 0001 0000 0000 0001"), "2001:db8::1:0:0:1");
    assert.equal(fmt("0000 0000 0001 0001 0000 0000 0001 0001"), "::1:1:0:0:1:1");
  });

  it("never compresses a single zero group", () => {
    assert.equal(fmt("2001 0db8 0000 0001 0001 0001 0001 0001"), "2001:db8:0:1:1:1:1:1");
    assert.equal(fmt("0000 0001 0000 0001 0000 0001 0000 0001"), "0:1:0:1:0:1:0:1");
  });

  it("writes lower case without leading zeros", () => {
    assert.equal(fmt("2001 0DB8 00AB 0C00 000D 0000 0000 FFFF"), "2001:db8:ab:c00:d::ffff");
    assert.equal(fmt("0001 0002 0003 0004 0005 0006 0007 0008"), "1:2:3:4:5:6:7:8");
  });

  it("writes an IPv4-mapped address in hex groups, which parse back to the same bytes", () => {
    assert.equal(fmt("00000000 00000000 0000ffff 7f000001"), "::ffff:7f00:1");
  });

  it("round-trips arbitrary addresses in canonical form", () => {
    let s = 0x2468ace;
    const next = () => {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      return s;
    };
    for (let i = 0; i < 2000; i++) {
      const bytes = new Uint8Array(16);
      // Mostly zero groups, so runs of every length and position occur.
      for (let g = 0; g < 8; g++) {
        if (next() % 3 === 0) {
          const n = next() % 4 === 0 ? next() % 16 : next() & 0xffff;
          bytes[g * 2] = n >> 8;
          bytes[g * 2 + 1] = n & 0xff;
        }
      }
      const text = formatIPv6(bytes);
      assert.equal(v6(text), toHex(bytes), text);
      assert.doesNotMatch(text, /[A-F]|(^|:)0[0-9a-f]|:::|::.*::/, text);
      const [left, right] = text.includes("::") ? text.split("::") : [text, undefined];
      const groupsOf = (t: string | undefined) => (t ? t.split(":") : []);
      const zeroRuns = (gs: string[]) => {
        const runs = [0];
        for (const g of gs) g === "0" ? runs[runs.length - 1]++ : runs.push(0);
        return runs;
      };
      if (right === undefined) {
        assert.equal(groupsOf(left).length, 8, text);
        assert.ok(zeroRuns(groupsOf(left)).every((n) => n < 2), `uncompressed zero run in ${text}`);
      } else {
        const compressed = 8 - groupsOf(left).length - groupsOf(right).length;
        assert.ok(compressed >= 2, `:: for fewer than two groups in ${text}`);
        assert.ok(zeroRuns(groupsOf(left)).every((n) => n < compressed), `longer run before :: in ${text}`);
        assert.ok(zeroRuns(groupsOf(right)).every((n) => n <= compressed), `longer run after :: in ${text}`);
      }
    }
  });
});

describe("formatIPv4, hostType and canonicalIP", () => {
  it("formatIPv4 writes a dotted quad", () => {
    assert.equal(formatIPv4(hex("c0 00 02 0a")), "192.0.2.10");
    assert.equal(formatIPv4(hex("00 00 00 00")), "0.0.0.0");
  });

  it("hostType tells IP literals from names", () => {
    assert.equal(hostType("192.0.2.1"), "ipv4");
    assert.equal(hostType("2001:db8::1"), "ipv6");
    assert.equal(hostType("::ffff:1.2.3.4"), "ipv6");
    assert.equal(hostType("example.com"), "domain");
    assert.equal(hostType("01.2.3.4"), "domain");
    assert.equal(hostType("1.2.3.4::"), "domain");
  });

  it("canonicalIP gives the one spelling of an IP literal", () => {
    assert.equal(canonicalIP("192.0.2.1"), "192.0.2.1");
    assert.equal(canonicalIP("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
    assert.equal(canonicalIP("2001:0db8::0001"), "2001:db8::1");
    assert.equal(canonicalIP("0:0:0:0:0:0:0:1"), "::1");
    assert.equal(canonicalIP("0000::0000"), "::");
    assert.equal(canonicalIP("::ffff:127.0.0.1"), "::ffff:7f00:1");
    assert.equal(canonicalIP("64:ff9b::192.0.2.33"), "64:ff9b::c000:221");
  });

  it("canonicalIP returns null for anything that is not a strict IP literal", () => {
    for (
      const bad of [
        "",
        "example.com",
        "localhost",
        "01.2.3.4",
        "127.1",
        "1::2::3",
        "1.2.3.4::",
        "fe80::1%eth0",
        "1:2:3:4:5:6:7:8:9",
      ]
    ) {
      assert.equal(canonicalIP(bad), null, JSON.stringify(bad));
    }
  });
});
