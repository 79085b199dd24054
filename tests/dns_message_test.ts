/**
 * The DNS message codec (lib/core/dns_message.ts) byte for byte, and the
 * DNS-over-HTTPS resolver over it against the DoH fixture on loopback (GET
 * and POST), on every runtime.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  answersFor,
  base64url,
  decodeMessage,
  DnsMessageError,
  DnsType,
  encodeQuery,
  reverseName,
} from "../lib/core/dns_message.ts";
import { dohResolver } from "../lib/upstream/doh.ts";
import { SocksError } from "../lib/core/errors.ts";
import { ReplyCode } from "../lib/core/wire.ts";
import { hex, toHex } from "./_hex.ts";
import { DOH_ANSWERS, type DohFixture, startDoh } from "./_doh_fixture.ts";

describe("DNS messages", () => {
  it("a query: ID 0, RD, one question, class IN (RFC 1035 §4.1, RFC 8484 §4.1)", () => {
    assert.equal(
      toHex(encodeQuery("a.test", DnsType.A)),
      toHex(hex("0000 0100 0001 0000 0000 0000 01 'a' 04 'test' 00 0001 0001")),
    );
    const aaaa = toHex(encodeQuery("a.test.", DnsType.AAAA, 0x1234));
    assert.equal(aaaa, toHex(hex("1234 0100 0001 0000 0000 0000 01 'a' 04 'test' 00 001c 0001")));
  });

  it("names that cannot be asked throw: an empty label, a label over 63 bytes, a name over 255", () => {
    for (const name of ["a..test", `${"x".repeat(64)}.test`, Array(130).fill("ab").join(".")]) {
      assert.throws(() => encodeQuery(name, DnsType.A), DnsMessageError, name.slice(0, 20));
    }
    assert.doesNotThrow(() => encodeQuery(`${"x".repeat(63)}.test`, DnsType.A));
  });

  it("a response with compressed names: A, AAAA, and a CNAME chain followed", () => {
    const msg = decodeMessage(hex(
      "0000 8180 0001 0003 0000 0000" + // header: response, RD RA, 1 question, 3 answers
        "05 616c696173 04 74657374 00 0001 0001" + // alias.test A IN
        "c00c 0005 0001 00000e10 0006 03 6d6964 c012" + // alias.test CNAME mid.test (pointer to "test")
        "c028 0005 0001 00000e10 0006 03 776562 c012" + // mid.test CNAME web.test
        "c03a 0001 0001 0000003c 0004 7f000001", // web.test A 127.0.0.1
    ));
    assert.equal(msg.response, true);
    assert.equal(msg.rcode, 0);
    assert.deepEqual(msg.question, { name: "alias.test", type: 1 });
    assert.deepEqual(msg.answers.map((r) => [r.name, r.type, r.value]), [
      ["alias.test", 5, "mid.test"],
      ["mid.test", 5, "web.test"],
      ["web.test", 1, "127.0.0.1"],
    ]);
    assert.equal(msg.answers[2].ttl, 60);
    assert.deepEqual(answersFor(msg, "ALIAS.test.", DnsType.A), ["127.0.0.1"]);
    assert.deepEqual(answersFor(msg, "alias.test", DnsType.AAAA), []);
    const v6 = decodeMessage(hex(
      "0000 8180 0001 0001 0000 0000 02 7636 00 001c 0001" +
        "c00c 001c 0001 00000e10 0010 20010db8000000000000000000000055",
    ));
    assert.deepEqual(answersFor(v6, "v6", DnsType.AAAA), ["2001:db8::55"]);
  });

  it("NXDOMAIN is rcode 3; a CNAME loop ends with no answer", () => {
    assert.equal(decodeMessage(hex("0000 8183 0000 0000 0000 0000")).rcode, 3);
    const loop = decodeMessage(hex(
      "0000 8180 0000 0002 0000 0000" +
        "01 61 00 0005 0001 00000e10 0003 01 62 00" + // a CNAME b
        "01 62 00 0005 0001 00000e10 0003 01 61 00", // b CNAME a
    ));
    assert.deepEqual(answersFor(loop, "a", DnsType.A), []);
  });

  it("malformed messages throw a DnsMessageError, never anything else", () => {
    const bad = [
      "00", // no header
      "0000 8180 0001 0000 0000 0000 05 61", // question cut short
      "0000 8180 0000 0001 0000 0000 c00c", // pointer to itself... and no record
      "0000 8180 0000 0001 0000 0000 00 0001 0001 00000000 0004 7f00", // A cut short
      "0000 8180 0000 0001 0000 0000 00 0001 0001 00000000 0003 7f0000", // A of 3 bytes
      "0000 8180 0001 0000 0000 0000 c00c 0001 0001", // question name: pointer loop
      "0000 8180 0001 0000 0000 0000 80 0001 0001", // label type 0b10
    ];
    for (const h of bad) assert.throws(() => decodeMessage(hex(h)), DnsMessageError, h);
  });

  it("reverse names (RFC 1035 §3.5, RFC 3596 §2.5) and base64url without padding", () => {
    assert.equal(reverseName("192.0.2.55"), "55.2.0.192.in-addr.arpa");
    assert.equal(reverseName("2001:db8::55"), `5.5.${"0.".repeat(22)}8.b.d.0.1.0.0.2.ip6.arpa`);
    assert.equal(reverseName("example.test"), null);
    assert.equal(base64url(Uint8Array.of()), "");
    assert.equal(base64url(Uint8Array.of(0xfb)), "-w");
    assert.equal(base64url(Uint8Array.of(0xfb, 0xff)), "-_8");
    assert.equal(base64url(Uint8Array.of(0xfb, 0xff, 0xbf)), "-_-_");
    // RFC 8484 §4.1.1's example: www.example.com A, ID 0.
    assert.equal(
      base64url(encodeQuery("www.example.com", DnsType.A)),
      "AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB",
    );
  });
});

describe("DNS-over-HTTPS resolver", () => {
  let doh: DohFixture;
  before(async () => (doh = await startDoh()));
  after(() => doh.close());

  for (const method of ["GET", "POST"] as const) {
    it(`${method}: names, a CNAME chain, PTR for IPv4 and IPv6; NXDOMAIN and no address are 0x04`, async () => {
      const resolver = dohResolver({ url: doh.url, method });
      const seen = doh.requests.length;
      assert.deepEqual(await resolver.lookup("web.test"), ["127.0.0.1"]);
      assert.deepEqual(await resolver.lookup("dual.test"), ["127.0.0.3", "::1"]);
      assert.deepEqual(await resolver.lookup("web6.test"), ["::1"]);
      assert.deepEqual(await resolver.lookup("alias.test"), [DOH_ANSWERS["alias.test"]]);
      assert.deepEqual(await resolver.reverse("192.0.2.55"), ["ptr.test"]);
      assert.deepEqual(await resolver.reverse("2001:db8::55"), ["ptr6.test"]);
      for (const name of ["nx.test", "noaddr.test", "loop.test"]) {
        await assert.rejects(resolver.lookup(name), (e: unknown) => {
          assert.ok(e instanceof SocksError, String(e));
          assert.equal(e.reply, ReplyCode.HostUnreachable, `${name}: ${e.message}`);
          return true;
        });
      }
      await assert.rejects(resolver.reverse("192.0.2.56"), { reply: ReplyCode.HostUnreachable });
      assert.ok(doh.requests.slice(seen).every((r) => r.method === method));
      assert.ok(doh.requests.slice(seen).some((r) => r.name === "web.test" && r.type === DnsType.AAAA));
    });
  }

  it("a failing resolver is 0x01: SERVFAIL, an HTTP error, a wrong content type, nobody listening", async () => {
    await assert.rejects(dohResolver({ url: doh.url }).lookup("fail.test"), {
      reply: ReplyCode.GeneralFailure,
    });
    await assert.rejects(
      dohResolver({ url: doh.url.replace("/dns-query", "/other") }).lookup("web.test"),
      { reply: ReplyCode.GeneralFailure },
    );
    const html = (_url: string, _init: RequestInit) =>
      Promise.resolve(new Response("<html>", { headers: { "content-type": "text/html" } }));
    await assert.rejects(dohResolver({ url: doh.url, fetch: html }).lookup("web.test"), {
      reply: ReplyCode.GeneralFailure,
    });
    await assert.rejects(dohResolver({ url: "http://127.0.0.1:1/dns-query" }).lookup("web.test"), {
      reply: ReplyCode.GeneralFailure,
    });
  });
});
