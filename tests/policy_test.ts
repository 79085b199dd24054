/** The destination policy and credential helpers: pure functions, no sockets. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  checkCommand,
  checkDestination,
  clientAllowed,
  DEFAULT_POLICY,
  type DestinationPolicy,
  type DestinationRule,
  evaluateDestination,
  isNonPublicAddress,
  parseCidr,
  parseRule,
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
        // Not globally reachable by IANA's special-purpose registries (each row: special_addresses_test.ts).
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.9",
        "192.88.99.1",
        "2001:db8::1",
        "3fff::1",
        "2002:7f00:1::1",
        "64:ff9b:1::1",
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
        "1.2.3.7",
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

describe("destination rules", () => {
  const policy = (rules: DestinationRule[], allowPrivate = false): DestinationPolicy => ({
    allowPrivate,
    allowConnectDir: true,
    rules,
  });

  it("parses every rule form and names the problem in bad ones", () => {
    assert.deepEqual(parseRule("allow", "connect@10.0.0.0/8:443").ports, [443, 443]);
    assert.deepEqual(parseRule("deny", "connect,resolve@*.corp.example").commands, ["connect", "resolve"]);
    assert.equal(parseRule("deny", "*.Corp.Example.").host, "*.corp.example");
    assert.equal(parseRule("deny", "[fd00::/8]:1-1024").cidr?.prefix, 8);
    assert.deepEqual(parseRule("deny", "[fd00::/8]:1-1024").ports, [1, 1024]);
    assert.equal(parseRule("deny", "2001:db8::/32").cidr?.prefix, 32);
    assert.equal(parseRule("allow", "*:8080").host, undefined);
    // Who may connect back to a BIND.
    assert.deepEqual(parseRule("deny", "bind@1.2.3.4").commands, ["bind"]);
    assert.deepEqual(parseRule("deny", "*").commands, ["connect", "connect_dir", "resolve", "bind", "udp"]);
    for (
      const bad of [
        "listen@1.2.3.4",
        "1.2.3.4:99999",
        "1.2.3.4:9-1",
        "10.0.0.0/40",
        "a b",
        "x@",
        "*.*.example",
      ]
    ) {
      assert.throws(() => parseRule("deny", bad), /invalid rule/, bad);
    }
  });

  it("refuses cloud metadata, private and loopback by default, in every spelling, for every command", () => {
    for (
      const ip of [
        "169.254.169.254",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "127.0.0.1",
        "0.0.0.0",
        "10.0.0.1",
      ]
    ) {
      for (const command of ["connect", "connect_dir", "resolve"] as const) {
        assert.equal(
          evaluateDestination({ command, ip, port: 80 }, DEFAULT_POLICY),
          ReplyCode.NotAllowed,
          `${command} ${ip}`,
        );
      }
    }
  });

  it("first match wins; an allow rule opens a private range; a deny rule closes a public one", () => {
    const p = policy([
      parseRule("deny", "10.9.0.0/16"),
      parseRule("allow", "connect@10.0.0.0/8:443"),
      parseRule("deny", "connect@1.2.3.0/24"),
    ]);
    assert.equal(evaluateDestination({ command: "connect", ip: "10.1.2.3", port: 443 }, p), null);
    assert.equal(
      evaluateDestination({ command: "connect", ip: "10.1.2.3", port: 80 }, p),
      ReplyCode.NotAllowed,
    );
    assert.equal(
      evaluateDestination({ command: "connect", ip: "10.9.2.3", port: 443 }, p),
      ReplyCode.NotAllowed,
    );
    assert.equal(
      evaluateDestination({ command: "connect_dir", ip: "10.1.2.3", port: 443 }, p),
      ReplyCode.NotAllowed,
    );
    assert.equal(
      evaluateDestination({ command: "connect", ip: "1.2.3.7", port: 443 }, p),
      ReplyCode.NotAllowed,
    );
    assert.equal(evaluateDestination({ command: "resolve", ip: "1.2.3.7", port: 0 }, p), null);
    assert.equal(
      evaluateDestination({ command: "connect", ip: "::ffff:10.9.0.1", port: 443 }, p),
      ReplyCode.NotAllowed,
    );
  });

  it("host rules decide before name resolution; CIDR rules wait for the address", () => {
    const p = policy([parseRule("deny", "*.corp.example"), parseRule("allow", "resolve@intranet.example")]);
    assert.equal(
      evaluateDestination({ command: "connect", name: "db.corp.example", port: 5432 }, p),
      ReplyCode.NotAllowed,
    );
    assert.equal(
      evaluateDestination({ command: "connect", name: "corp.example", port: 5432 }, p),
      "undecided",
    );
    assert.equal(evaluateDestination({ command: "resolve", name: "intranet.example", port: 0 }, p), null);
    assert.equal(
      evaluateDestination({ command: "resolve", name: "intranet.example", ip: "10.0.0.8", port: 0 }, p),
      null,
    );
    assert.equal(
      evaluateDestination({ command: "connect", name: "intranet.example", ip: "10.0.0.8", port: 80 }, p),
      ReplyCode.NotAllowed,
    );
    const cidrFirst = policy([parseRule("deny", "192.0.2.0/24"), parseRule("deny", "bad.example")]);
    assert.equal(
      evaluateDestination({ command: "connect", name: "bad.example", port: 80 }, cidrFirst),
      "undecided",
    );
    assert.equal(
      evaluateDestination(
        { command: "connect", name: "bad.example", ip: "1.2.3.1", port: 80 },
        cidrFirst,
      ),
      ReplyCode.NotAllowed,
    );
  });

  it("allowPrivate opens the default ranges but rules still apply", () => {
    const p = policy([parseRule("deny", "169.254.169.254")], true);
    assert.equal(evaluateDestination({ command: "connect", ip: "10.0.0.1", port: 80 }, p), null);
    assert.equal(
      evaluateDestination({ command: "connect", ip: "169.254.169.254", port: 80 }, p),
      ReplyCode.NotAllowed,
    );
  });
});

describe("client policy", () => {
  it("no rules: everyone; allow rules: only those; deny rules: all but those", () => {
    assert.equal(clientAllowed("203.0.113.9", { rules: [] }), true);
    const only = { rules: [{ action: "allow" as const, cidr: parseCidr("127.0.0.0/8") }] };
    assert.equal(clientAllowed("127.0.0.5", only), true);
    assert.equal(clientAllowed("::ffff:127.0.0.5", only), true);
    assert.equal(clientAllowed("203.0.113.9", only), false);
    assert.equal(clientAllowed(undefined, only), false);
    const deny = { rules: [{ action: "deny" as const, cidr: parseCidr("203.0.113.0/24") }] };
    assert.equal(clientAllowed("203.0.113.9", deny), false);
    assert.equal(clientAllowed("198.51.100.1", deny), true);
  });
});
