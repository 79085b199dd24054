/** The destination policy and credential helpers: pure functions, no sockets. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  checkCommand,
  checkDestination,
  DEFAULT_POLICY,
  isNonPublicAddress,
  parseCidr,
} from "../lib/policy.ts";
import { constantTimeEqual, createAuthenticator, parseUsers } from "../lib/auth.ts";
import { ReplyCode } from "../lib/core/wire.ts";
import { isLoopbackHost } from "../lib/serve.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

describe("destination policy", () => {
  it("refuses every non-public range by default, in every spelling", () => {
    for (
      const ip of [
        "127.0.0.1",
        "127.255.255.254",
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "169.254.169.254",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "fc00::1",
        "fd00:ec2::254",
        "fe80::1",
        "ff02::1",
        "0:0:0:0:0:0:0:1",
        "0000::0001",
        "FE80::1",
      ]
    ) {
      assert.equal(checkDestination(ip, DEFAULT_POLICY), ReplyCode.NotAllowed, ip);
      assert.equal(isNonPublicAddress(ip), true, ip);
    }
  });

  it("allows public addresses, and everything with allowPrivate", () => {
    for (
      const ip of [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.128.0.1",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",
        "198.51.100.7",
      ]
    ) {
      assert.equal(checkDestination(ip, DEFAULT_POLICY), null, ip);
    }
    for (const ip of ["127.0.0.1", "::1", "10.0.0.1"]) {
      assert.equal(checkDestination(ip, { ...DEFAULT_POLICY, allowPrivate: true }), null, ip);
    }
  });

  it("never allows something that is not an IP literal", () => {
    assert.equal(
      checkDestination("localhost", { allowPrivate: true, allowConnectDir: true }),
      ReplyCode.NotAllowed,
    );
    assert.equal(checkDestination("", DEFAULT_POLICY), ReplyCode.NotAllowed);
  });

  it("CONNECT_DIR can be denied on its own", () => {
    assert.equal(checkCommand("connect_dir", DEFAULT_POLICY), null);
    assert.equal(
      checkCommand("connect_dir", { ...DEFAULT_POLICY, allowConnectDir: false }),
      ReplyCode.NotAllowed,
    );
    assert.equal(checkCommand("connect", { ...DEFAULT_POLICY, allowConnectDir: false }), null);
  });

  it("parses CIDR ranges and rejects bad ones", () => {
    assert.equal(parseCidr("10.0.0.0/8").prefix, 8);
    assert.equal(parseCidr("::1").prefix, 128);
    for (const bad of ["10.0.0.0/33", "10.0.0/8", "::/129", "x/1", "1.2.3.4/8/1", "1.2.3.4/"]) {
      assert.throws(() => parseCidr(bad), TypeError, bad);
    }
  });

  it("knows loopback listen addresses", () => {
    for (const h of ["127.0.0.1", "127.1.2.3", "::1", "localhost"]) assert.equal(isLoopbackHost(h), true, h);
    for (const h of ["0.0.0.0", "::", "192.168.1.1", "example.org"]) {
      assert.equal(isLoopbackHost(h), false, h);
    }
  });
});

describe("users and credentials", () => {
  it("splits at the first colon, keeps spaces, skips comments and blank lines", () => {
    const users = parseUsers("# comment\n\nalice:correct horse:battery staple\r\nbob: leading space\n");
    assert.deepEqual([...users], [["alice", "correct horse:battery staple"], ["bob", " leading space"]]);
  });

  it("rejects malformed lines with the line number", () => {
    assert.throws(() => parseUsers("alice\n"), /line 1/);
    assert.throws(() => parseUsers("ok:x\n:nopass\n"), /line 2/);
    assert.throws(() => parseUsers("bob:\n"), /line 1/);
    assert.throws(() => parseUsers(`u:${"p".repeat(256)}`), /255 bytes/);
  });

  it("authenticates exact credentials only", () => {
    const auth = createAuthenticator(new Map([["alice", "pw"], ["bøb", "pässword"]]));
    assert.equal(auth(bytes("alice"), bytes("pw")), true);
    assert.equal(auth(bytes("bøb"), bytes("pässword")), true);
    for (
      const [u, p] of [["alice", "pw "], ["alice", "p"], ["alice", "PW"], ["mallory", "pw"], ["", "pw"], [
        "alice",
        "",
      ]]
    ) {
      assert.equal(auth(bytes(u), bytes(p)), false, `${u}:${p}`);
    }
  });

  it("constant-time comparison is correct for all length combinations", () => {
    assert.equal(constantTimeEqual(bytes("abc"), bytes("abc")), true);
    assert.equal(constantTimeEqual(bytes("abc"), bytes("abd")), false);
    assert.equal(constantTimeEqual(bytes("abc"), bytes("abcabc")), false);
    assert.equal(constantTimeEqual(bytes(""), bytes("a")), false);
    assert.equal(constantTimeEqual(bytes(""), bytes("")), true);
  });
});
