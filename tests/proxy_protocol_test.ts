/**
 * The PROXY protocol header parser (lib/core/proxy_protocol.ts), byte by
 * byte: version 1 and 2 headers as HAProxy's proxy-protocol.txt writes them,
 * every way they can be wrong, and a fast-check property that no chunking
 * changes the verdict, the header or the bytes that follow it.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  PROXY_MAX_BUFFERED,
  PROXY_V1_MAX_LINE,
  type ProxyHeader,
  ProxyHeaderParser,
  type ProxyHeaderStep,
} from "../lib/core/proxy_protocol.ts";
import { concat, hex, repeat, toHex } from "./_hex.ts";

const SIG = "0d0a0d0a000d0a515549540a";
const GREETING = hex("05 01 00");

/** Feeds `bytes` in `sizes`-long chunks (the last size repeats); returns the verdict and the bytes not fed. */
function feed(
  bytes: Uint8Array,
  sizes: number[] = [bytes.length],
): { step: ProxyHeaderStep; unfed: Uint8Array } {
  const parser = new ProxyHeaderParser();
  let at = 0, k = 0;
  let step: ProxyHeaderStep = { type: "need_more" };
  while (at < bytes.length) {
    const size = Math.max(1, sizes[Math.min(k++, sizes.length - 1)]);
    step = parser.receive(bytes.subarray(at, at + size));
    assert.ok(parser.buffered <= PROXY_MAX_BUFFERED, `buffered ${parser.buffered}`);
    at += size;
    if (step.type !== "need_more") return { step, unfed: bytes.subarray(Math.min(at, bytes.length)) };
  }
  return { step, unfed: new Uint8Array(0) };
}

/** The header parsed from `bytes` whole and one byte at a time (they must agree); the rest must be `rest`. */
function header(bytes: Uint8Array, rest: Uint8Array = new Uint8Array(0)): ProxyHeader {
  const whole = feed(bytes);
  const single = feed(bytes, [1]);
  for (const { step, unfed } of [whole, single]) {
    assert.equal(step.type, "header", step.type === "invalid" ? step.reason : "incomplete");
    if (step.type !== "header") throw new Error("unreachable");
    assert.equal(toHex(concat(step.rest, unfed)), toHex(rest));
  }
  assert.deepEqual(
    (single.step as { header: ProxyHeader }).header,
    (whole.step as { header: ProxyHeader }).header,
  );
  return (whole.step as { header: ProxyHeader }).header;
}

/** The reason `bytes` are refused, whole and byte by byte (same reason); with `at`, the byte count it took. */
function refused(bytes: Uint8Array, at?: number): string {
  const whole = feed(bytes);
  assert.equal(whole.step.type, "invalid", `accepted ${JSON.stringify(whole.step)}`);
  const parser = new ProxyHeaderParser();
  for (let i = 0; i < bytes.length; i++) {
    const step = parser.receive(bytes.subarray(i, i + 1));
    if (step.type === "need_more") continue;
    assert.equal(step.type, "invalid");
    assert.equal((step as { reason: string }).reason, (whole.step as { reason: string }).reason);
    if (at !== undefined) assert.equal(i + 1, at, "decided at byte");
    return (step as { reason: string }).reason;
  }
  assert.fail("byte by byte: never decided");
}

/** Stays need_more through all of `bytes`, fed whole and byte by byte. */
function incomplete(bytes: Uint8Array) {
  assert.equal(feed(bytes).step.type, "need_more");
  assert.equal(feed(bytes, [1]).step.type, "need_more");
}

const v1 = (line: string) => concat(Array.from(line, (c) => c.charCodeAt(0)), [0x0d, 0x0a]);

describe("PROXY protocol v1", () => {
  it("TCP4: the client and the address it reached; the SOCKS greeting after it is left over", () => {
    assert.deepEqual(header(concat(v1("PROXY TCP4 192.0.2.7 127.0.0.1 40000 1080"), GREETING), GREETING), {
      version: 1,
      command: "proxy",
      family: "inet",
      source: { host: "192.0.2.7", port: 40000 },
      destination: { host: "127.0.0.1", port: 1080 },
    });
  });

  it("TCP6: addresses in canonical form (any case, :: anywhere)", () => {
    const h = header(v1("PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 0 65535"));
    assert.deepEqual(h.source, { host: "2001:db8::7", port: 0 });
    assert.deepEqual(h.destination, { host: "::1", port: 65535 });
    assert.equal(h.family, "inet6");
  });

  it("UNKNOWN: short form and with anything before CRLF: no addresses (the real peer stays)", () => {
    assert.deepEqual(header(v1("PROXY UNKNOWN")), { version: 1, command: "proxy", family: "unspec" });
    assert.deepEqual(header(v1("PROXY UNKNOWN whatever 1 2 3 4 5")), {
      version: 1,
      command: "proxy",
      family: "unspec",
    });
  });

  it("the longest line (107 bytes with CRLF) is read; 107 bytes without CRLF are refused at the 107th", () => {
    const f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const longest = v1(`PROXY UNKNOWN ${f} ${f} 65535 65535`);
    assert.equal(longest.length, PROXY_V1_MAX_LINE);
    header(concat(longest, GREETING), GREETING);
    const tcp6 = v1(`PROXY TCP6 ${f} ${f} 65535 65535`);
    assert.equal(tcp6.length, 104);
    assert.equal(header(tcp6).source?.host, f);
    const tooLong = hex(`'PROXY UNKNOWN ${f} ${f} 65535 655355' 0d0a`);
    assert.match(refused(tooLong, PROXY_V1_MAX_LINE), /without CRLF in 107 bytes/);
  });

  it("is refused as soon as the bytes cannot start a header", () => {
    assert.match(refused(GREETING, 1), /not a PROXY protocol header/); // SOCKS5 sent to a PROXY listener
    assert.match(refused(hex("04 01 0050 7f000001 00"), 1), /not a PROXY protocol header/);
    assert.match(refused(hex("'GET / HTTP/1.1' 0d0a"), 1), /not a PROXY protocol header/);
    assert.match(refused(hex("'POST / HTTP/1.1' 0d0a"), 2), /not a PROXY protocol header/);
    assert.match(refused(hex("'proxy TCP4'"), 1), /not a PROXY protocol header/);
    assert.match(refused(hex("'PROXY  TCP4'"), 7), /none of TCP4, TCP6, UNKNOWN/);
    assert.match(refused(hex("'PROXY TCP5 '"), 10), /none of TCP4, TCP6, UNKNOWN/);
    assert.match(refused(hex("'PROXY TCP4 1.2.3.4' 00"), 19), /not printable ASCII/);
    assert.match(refused(hex("'PROXY TCP4 1.2.3.4 5.6.7.8 1 2' 0a"), 31), /LF without CR/);
    assert.match(refused(hex("'PROXY TCP4 1.2.3.4 5.6.7.8 1 2' 0d 'x'"), 32), /CR without LF/);
  });

  it("refuses a line that is not exactly the specification's", () => {
    const bad = [
      ["PROXY TCP4 192.0.2.07 127.0.0.1 1 2", /not IPv4/], // a leading zero (octal?)
      ["PROXY TCP4 192.0.2 127.0.0.1 1 2", /not IPv4/],
      ["PROXY TCP4 ::1 127.0.0.1 1 2", /not IPv4/],
      ["PROXY TCP6 127.0.0.1 ::1 1 2", /not IPv6/],
      ["PROXY TCP6 [::1] ::1 1 2", /not IPv6/],
      ["PROXY TCP6 fe80::1%eth0 ::1 1 2", /not IPv6/],
      ["PROXY TCP4 192.0.2.7 127.0.0.1 080 1080", /port is not 0 to 65535/],
      ["PROXY TCP4 192.0.2.7 127.0.0.1 65536 1080", /port is not 0 to 65535/],
      ["PROXY TCP4 192.0.2.7 127.0.0.1 -1 1080", /port is not 0 to 65535/],
      ["PROXY TCP4 192.0.2.7 127.0.0.1 40000", /two addresses and two ports/],
      ["PROXY TCP4 192.0.2.7 127.0.0.1 40000 1080 ", /two addresses and two ports/],
      ["PROXY TCP4 192.0.2.7  127.0.0.1 40000 1080", /two addresses and two ports/],
      ["PROXY TCP4", /none of TCP4, TCP6, UNKNOWN/], // "TCP4" then CR: not "TCP4 "
      ["PROXY TCP44 1.2.3.4 1.2.3.4 1 2", /none of TCP4, TCP6, UNKNOWN/],
      ["PROXY UNKNOWNX", /none of TCP4, TCP6, UNKNOWN/],
      ["PROXY ", /none of TCP4, TCP6, UNKNOWN/],
    ] as const;
    for (const [line, reason] of bad) assert.match(refused(v1(line)), reason, line);
  });

  it("waits for the CRLF, whatever arrives before it", () => {
    incomplete(hex("'P'"));
    incomplete(hex("'PROXY TCP4 192.0.2.7 127.0.0.1 40000 1080'"));
    incomplete(hex("'PROXY TCP4 192.0.2.7 127.0.0.1 40000 1080' 0d"));
    incomplete(hex("'PROXY UNKNOWN'"));
  });
});

const v2 = (verCmd: string, fam: string, body: string) => {
  const block = hex(body);
  return concat(hex(`${SIG} ${verCmd} ${fam}`), [block.length >> 8, block.length & 0xff], block);
};

describe("PROXY protocol v2", () => {
  it("TCP over IPv4 (the 28 bytes HAProxy's send-proxy-v2 sends)", () => {
    const bytes = v2("21", "11", "c0000207 7f000001 9c40 0438");
    assert.equal(bytes.length, 28);
    assert.deepEqual(header(concat(bytes, GREETING), GREETING), {
      version: 2,
      command: "proxy",
      family: "inet",
      source: { host: "192.0.2.7", port: 40000 },
      destination: { host: "127.0.0.1", port: 1080 },
    });
  });

  it("TCP over IPv6 (52 bytes)", () => {
    const bytes = v2("21", "21", `20010db8${repeat(0, 11)}07 ${repeat(0, 15)}01 0050 0438`);
    assert.equal(bytes.length, 52);
    const h = header(bytes);
    assert.deepEqual(h.source, { host: "2001:db8::7", port: 80 });
    assert.deepEqual(h.destination, { host: "::1", port: 1080 });
  });

  it("LOCAL (health checks): no client named, whatever block follows", () => {
    assert.deepEqual(header(v2("20", "00", "")), { version: 2, command: "local", family: "unspec" });
    // "must not assume zero is presented for LOCAL connections": an address block, skipped unread.
    assert.deepEqual(header(concat(v2("20", "11", "c0000207 7f000001 9c40 0438"), GREETING), GREETING), {
      version: 2,
      command: "local",
      family: "unspec",
    });
    // Even bytes that would be a malformed TLV: LOCAL's block is opaque.
    header(v2("20", "11", `${repeat(0, 12)} 04 ffff`));
  });

  it("UNSPEC family or transport, UDP, AF_UNIX: no client named (the real peer stays)", () => {
    assert.deepEqual(header(v2("21", "00", "")), { version: 2, command: "proxy", family: "unspec" });
    assert.deepEqual(header(v2("21", "10", "0102")), { version: 2, command: "proxy", family: "unspec" });
    assert.deepEqual(header(v2("21", "12", "c0000207 7f000001 9c40 0438")), {
      version: 2,
      command: "proxy",
      family: "inet",
    });
    const path = (p: string) => concat(hex(`'${p}'`), new Uint8Array(108 - p.length));
    const unix = concat(hex(`${SIG} 21 31 00d8`), path("/run/client.sock"), path("/run/edgesocks.sock"));
    assert.deepEqual(header(concat(unix, GREETING), GREETING), {
      version: 2,
      command: "proxy",
      family: "unix",
    });
  });

  it("skips TLVs, up to the longest a header can hold, without holding them", () => {
    const tlvs = "04 0002 0000  01 0002 'h2'  05 0000  e0 0003 010203";
    assert.deepEqual(
      header(concat(v2("21", "11", `c0000207 7f000001 9c40 0438 ${tlvs}`), GREETING), GREETING).source,
      { host: "192.0.2.7", port: 40000 },
    );
    // 65535 bytes after the fixed part: 12 of addresses, one TLV of 65520 bytes.
    const big = v2("21", "11", `c0000207 7f000001 9c40 0438 04 fff0 ${repeat(0xaa, 0xfff0)}`);
    assert.equal(big.length, 16 + 65535);
    assert.equal(feed(concat(big, GREETING), [1000]).step.type, "header");
    header(concat(big, GREETING), GREETING); // (feed() asserts `buffered` stays small throughout)
  });

  it("refuses malformed headers as soon as they are", () => {
    assert.match(refused(hex("0d 0a 0d 0a 01"), 5), /bad version 2 signature/);
    assert.match(refused(hex(`${SIG.slice(0, 22)} 0b`), 12), /bad version 2 signature/);
    assert.match(refused(hex(`${SIG} 11 11 000c`), 13), /version 1 \(only 1 and 2 exist\)/);
    assert.match(refused(hex(`${SIG} 31 11 000c`), 13), /version 3/);
    assert.match(refused(hex(`${SIG} 22 11 000c`), 13), /command 0x2/);
    assert.match(refused(hex(`${SIG} 21 41 000c`), 14), /address family 0x4 is not defined/);
    assert.match(refused(hex(`${SIG} 21 13 000c`), 14), /transport 0x3 is not defined/);
    assert.match(
      refused(v2("21", "11", "c0000207 7f000001"), 16),
      /address block of 8 bytes; its family needs 12/,
    );
    assert.match(refused(v2("21", "21", repeat(0, 35)), 16), /needs 36/);
    assert.match(refused(v2("21", "31", repeat(0, 215)), 16), /needs 216/);
    // A TLV longer than what the header has left, and a header that ends in a TLV's head.
    assert.match(refused(v2("21", "11", `${repeat(0, 12)} 04 0005 0000`), 31), /TLV of 5 bytes overruns/);
    assert.match(refused(v2("21", "11", `${repeat(0, 12)} 04 0003 0000`), 31), /TLV of 3 bytes overruns/);
    assert.match(refused(v2("21", "11", `${repeat(0, 12)} 04 00`)), /ends inside a TLV/);
  });

  it("waits for the whole header", () => {
    incomplete(hex("0d"));
    incomplete(hex(SIG));
    incomplete(hex(`${SIG} 21 11 000c c0000207`));
    incomplete(hex(`${SIG} 21 11 0010 c0000207 7f000001 9c40 0438 04 00`));
  });
});

describe("ProxyHeaderParser", () => {
  it("an empty chunk changes nothing; a call after the verdict is the driver's misuse", () => {
    const p = new ProxyHeaderParser();
    assert.deepEqual(p.receive(new Uint8Array(0)), { type: "need_more" });
    assert.equal(p.receive(v1("PROXY UNKNOWN")).type, "header");
    assert.equal(p.done, true);
    assert.throws(() => p.receive(GREETING), TypeError);
    const q = new ProxyHeaderParser();
    assert.equal(q.receive(GREETING).type, "invalid");
    assert.throws(() => q.receive(GREETING), TypeError);
  });
});

// ---------------------------------------------------------------- property

const byte = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(byte, byte, byte, byte).map((b) => b.join("."));
const ipv6 = fc.uint8Array({ minLength: 16, maxLength: 16 });
const port = fc.integer({ min: 0, max: 65535 });
const u16 = (n: number) => [n >> 8, n & 0xff];

/** A valid header of any kind, as bytes. */
const validHeader: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.tuple(ipv4, ipv4, port, port).map(([a, b, p, q]) => v1(`PROXY TCP4 ${a} ${b} ${p} ${q}`)),
  fc.tuple(ipv6, ipv6, port, port).map(([a, b, p, q]) =>
    v1(
      `PROXY TCP6 ${toHex(a).replace(/ /g, "").replace(/(.{4})(?!$)/g, "$1:")} ${
        toHex(b).replace(/ /g, "").replace(/(.{4})(?!$)/g, "$1:")
      } ${p} ${q}`,
    )
  ),
  fc.string({ maxLength: 90 }).map((s) => s.replace(/[^\x20-\x7e]/g, "x")).map((s) =>
    v1(`PROXY UNKNOWN${s ? " " + s : ""}`)
  ),
  fc.tuple(
    fc.constantFrom(0x20, 0x21),
    fc.constantFrom(0x00, 0x10, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32),
    fc.array(fc.tuple(byte, fc.uint8Array({ maxLength: 300 })), { maxLength: 4 }),
    fc.uint8Array({ minLength: 216, maxLength: 216 }),
  ).map(([verCmd, fam, tlvs, addr]) => {
    const need = verCmd === 0x20 || (fam & 0x0f) === 0 ? 0 : [0, 12, 36, 216][fam >> 4];
    const body = concat(addr.subarray(0, need), ...tlvs.map(([t, v]) => concat([t, ...u16(v.length)], v)));
    return concat(hex(SIG), [verCmd, fam, ...u16(body.length)], body);
  }),
);

/** Chunk sizes: mostly small, some large. */
const chunking = fc.array(fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 400 })), {
  minLength: 1,
  maxLength: 40,
});

/** What a feeding decided, comparable across chunkings. */
function verdict(bytes: Uint8Array, sizes?: number[]) {
  const { step, unfed } = feed(bytes, sizes);
  if (step.type === "header") {
    return { type: step.type, header: step.header, rest: toHex(concat(step.rest, unfed)) };
  }
  return step;
}

describe("PROXY protocol parser, property", () => {
  it("any chunking of a valid header and what follows gives the same header and the same rest", () => {
    fc.assert(
      fc.property(validHeader, fc.uint8Array({ maxLength: 40 }), chunking, (h, rest, sizes) => {
        const bytes = concat(h, rest);
        const whole = verdict(bytes);
        assert.equal(whole.type, "header");
        assert.equal((whole as { rest: string }).rest, toHex(rest));
        assert.deepEqual(verdict(bytes, sizes), whole);
        assert.deepEqual(verdict(bytes, [1]), whole);
      }),
      { numRuns: 3000, seed: 0x9909 },
    );
  });

  it("arbitrary bytes (and damaged headers) never throw, stay bounded, and chunking never changes the verdict", () => {
    const damaged = fc.tuple(validHeader, fc.nat(), byte).map(([h, at, b]) => {
      const copy = h.slice();
      copy[at % copy.length] = b;
      return copy;
    });
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      damaged,
      validHeader.map((h) => h.subarray(0, -1)),
    );
    fc.assert(
      fc.property(input, chunking, (bytes, sizes) => {
        assert.deepEqual(verdict(bytes, sizes), verdict(bytes));
        assert.deepEqual(verdict(bytes, [1]), verdict(bytes));
      }),
      { numRuns: 5000, seed: 0x9910 },
    );
  });
});
