/**
 * The UDP ASSOCIATE datagram codec (RFC 1928 §7), byte by byte: hex in,
 * fields out, and fields in, hex out; plus properties: any bytes decode
 * without throwing, and every encoded datagram decodes to what went in.
 * And the UDP flags of the command line.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeUdpDatagram, encodeUdpDatagram, udpHeaderLength } from "../lib/core/udp.ts";
import { formatIPv4, formatIPv6 } from "../lib/core/address.ts";
import { hex, toHex } from "./_hex.ts";
import { parseArgs } from "../lib/cli/flags.ts";

describe("UDP datagram codec: decode", () => {
  it("IPv4 target: RSV FRAG ATYP=1 ADDR PORT DATA", () => {
    const d = decodeUdpDatagram(hex("00 00 00 01 7f 00 00 01 00 35 de ad"));
    assert.equal(d.type, "datagram");
    if (d.type !== "datagram") return;
    assert.equal(d.frag, 0);
    assert.deepEqual(d.target, { host: "127.0.0.1", type: "ipv4", port: 53 });
    assert.equal(toHex(d.data), "de ad");
  });

  it("IPv6 target (ATYP 4), canonical text", () => {
    const d = decodeUdpDatagram(hex("00 00 00 04 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 01 bb ff"));
    assert.equal(d.type, "datagram");
    if (d.type !== "datagram") return;
    assert.deepEqual(d.target, { host: "2001:db8::1", type: "ipv6", port: 443 });
    assert.equal(toHex(d.data), "ff");
  });

  it("name target (ATYP 3), and the empty payload", () => {
    const d = decodeUdpDatagram(hex("00 00 00 03 08 77 65 62 2e 74 65 73 74 00 35"));
    assert.equal(d.type, "datagram");
    if (d.type !== "datagram") return;
    assert.deepEqual(d.target, { host: "web.test", type: "domain", port: 53 });
    assert.equal(d.data.length, 0);
  });

  it("FRAG is reported as sent (the relay drops FRAG != 0); RSV is ignored", () => {
    const d = decodeUdpDatagram(hex("ab cd 01 01 7f 00 00 01 00 35 00"));
    assert.equal(d.type === "datagram" && d.frag, 1);
  });

  it("malformed datagrams are values with a reason, never throws", () => {
    const cases: [string, string][] = [
      ["", "shorter than a UDP request header"],
      ["00 00 00", "shorter than a UDP request header"],
      ["00 00 00 01 7f 00 00 01 00", "truncated IPv4 address"],
      ["00 00 00 04 00 00", "truncated IPv6 address"],
      ["00 00 00 03", "truncated name"],
      ["00 00 00 03 05 61 62 00 35", "truncated name"],
      ["00 00 00 03 00 00 35", "malformed domain name"],
      ["00 00 00 03 03 61 20 62 00 35", "malformed domain name"],
      ["00 00 00 05 7f 00 00 01 00 35", "unknown address type 0x05"],
    ];
    for (const [bytes, reason] of cases) {
      assert.deepEqual(decodeUdpDatagram(hex(bytes)), { type: "invalid", reason }, bytes);
    }
  });
});

describe("UDP datagram codec: encode (replies to the client)", () => {
  it("IPv4 source: ATYP 1", () => {
    assert.equal(toHex(encodeUdpDatagram("127.0.0.1", 53, hex("ab"))), "00 00 00 01 7f 00 00 01 00 35 ab");
  });

  it("an IPv4-mapped IPv6 source goes as IPv4 (ATYP 1)", () => {
    assert.equal(toHex(encodeUdpDatagram("::ffff:10.1.2.3", 9, hex(""))), "00 00 00 01 0a 01 02 03 00 09");
  });

  it("IPv6 source: ATYP 4", () => {
    assert.equal(
      toHex(encodeUdpDatagram("::1", 65535, hex("01 02"))),
      "00 00 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 ff ff 01 02",
    );
    assert.equal(udpHeaderLength("::1"), 22);
    assert.equal(udpHeaderLength("127.0.0.1"), 10);
    assert.equal(udpHeaderLength("::ffff:127.0.0.1"), 10);
  });

  it("a name or a bad port is the caller's error (a relay always knows the source address)", () => {
    assert.throws(() => encodeUdpDatagram("example.org", 53, hex("")), TypeError);
    assert.throws(() => encodeUdpDatagram("127.0.0.1", 70000, hex("")), TypeError);
  });
});

describe("UDP datagram codec: properties", () => {
  const runs = { numRuns: 2_000, seed: 14 };
  it("any bytes decode without throwing, and a datagram's payload is the rest of the bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const d = decodeUdpDatagram(bytes);
        if (d.type === "datagram") {
          assert.ok(d.data.length <= bytes.length - 4);
          assert.deepEqual(d.data, bytes.subarray(bytes.length - d.data.length));
        } else assert.equal(typeof d.reason, "string");
      }),
      runs,
    );
  });

  it("round trip: what encode writes, decode reads back (address, port, payload; FRAG 0)", () => {
    const v4 = fc.uint8Array({ minLength: 4, maxLength: 4 }).map(formatIPv4);
    const v6 = fc.uint8Array({ minLength: 16, maxLength: 16 })
      // Mapped addresses (::ffff:a.b.c.d) go out as IPv4: checked on their own above.
      .filter((b) => !(b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff))
      .map(formatIPv6);
    fc.assert(
      fc.property(
        fc.oneof(v4, v6),
        fc.integer({ min: 0, max: 65535 }),
        fc.uint8Array({ maxLength: 200 }),
        (host, port, data) => {
          const bytes = encodeUdpDatagram(host, port, data);
          assert.equal(bytes.length, udpHeaderLength(host) + data.length);
          const d = decodeUdpDatagram(bytes);
          assert.equal(d.type, "datagram");
          if (d.type !== "datagram") return;
          assert.equal(d.frag, 0);
          assert.deepEqual(d.target, { host, type: host.includes(":") ? "ipv6" : "ipv4", port });
          assert.deepEqual(d.data, data);
        },
      ),
      runs,
    );
  });
});

describe("UDP flags", () => {
  it("--udp, --udp-advertise, --udp-ports, --udp-rate parse; bad values are refused with a clear message", () => {
    const opts = parseArgs([
      "--udp",
      "--udp-advertise",
      "[2001:DB8::7]",
      "--udp-ports",
      "40000-40099",
      "--udp-rate",
      "0",
    ]);
    assert.equal(opts.udp, true);
    assert.equal(opts.udpAdvertise, "2001:db8::7");
    assert.deepEqual(opts.udpPorts, [40000, 40099]);
    assert.equal(opts.udpRate, 0);
    assert.equal(parseArgs([]).udp, undefined, "off by default");
    const bad: [string[], string][] = [
      [
        ["--udp-advertise", "0.0.0.0"],
        '--udp-advertise needs an IP address other than 0.0.0.0 and ::, got "0.0.0.0"',
      ],
      [
        ["--udp-advertise", "proxy.example"],
        '--udp-advertise needs an IP address other than 0.0.0.0 and ::, got "proxy.example"',
      ],
      [["--udp-ports", "5-3"], '--udp-ports needs A-B with 1 <= A <= B <= 65535, got "5-3"'],
      [["--udp-ports", "0-10"], '--udp-ports needs A-B with 1 <= A <= B <= 65535, got "0-10"'],
      [["--udp-rate", "-1"], '--udp-rate needs a whole number, got "-1"'],
    ];
    for (const [args, message] of bad) assert.throws(() => parseArgs(args), { message }, args.join(" "));
  });
});
