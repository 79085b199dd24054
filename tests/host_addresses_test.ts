/**
 * The proxy host's own addresses are refused as destinations by default: the
 * pure check with the address list injected (no socket; no address here is
 * ever dialled).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  checkDestination,
  DEFAULT_POLICY,
  type DestinationPolicy,
  evaluateDestination,
  hostAddressSet,
  parseRule,
} from "../lib/policy.ts";
import { ReplyCode } from "../lib/core/wire.ts";

// As an interface list reads on a host with a public IPv4 and a global IPv6 address.
const own = hostAddressSet(["127.0.0.1", "::1", "1.2.3.4", "2a00:1450:4001::5", "fe80::1"]);
const policy: DestinationPolicy = { ...DEFAULT_POLICY, hostAddresses: own };

describe("the host's own addresses", () => {
  it("are kept in canonical text, embedded forms reduced to IPv4", () => {
    assert.deepEqual(
      [...hostAddressSet([
        "::ffff:1.2.3.4",
        "2A00:1450:4001:0:0:0:0:5",
        "not an address",
        "64:ff9b::102:304",
      ])],
      ["1.2.3.4", "2a00:1450:4001::5"],
    );
  });

  it("are refused in every spelling, after DNS as any dialled address", () => {
    for (
      const ip of ["1.2.3.4", "::ffff:1.2.3.4", "::ffff:102:304", "2a00:1450:4001::5", "2A00:1450:4001:0::5"]
    ) {
      assert.equal(checkDestination(ip, policy), ReplyCode.NotAllowed, ip);
      assert.equal(
        evaluateDestination({ command: "connect", ip, port: 22 }, policy),
        ReplyCode.NotAllowed,
        ip,
      );
      assert.equal(
        evaluateDestination({ command: "connect", name: "me.example", ip, port: 22 }, policy),
        ReplyCode.NotAllowed,
        ip,
      );
    }
  });

  it("leave every other public address alone", () => {
    for (const ip of ["1.2.3.5", "2a00:1450:4001::6"]) assert.equal(checkDestination(ip, policy), null, ip);
    assert.equal(checkDestination("1.2.3.4", DEFAULT_POLICY), null, "without the list nothing is known");
  });

  it("allowPrivate or an explicit allow rule lifts it; a deny rule still applies", () => {
    assert.equal(checkDestination("1.2.3.4", { ...policy, allowPrivate: true }), null);
    const opened = { ...policy, rules: [parseRule("allow", "connect@1.2.3.4:443")] };
    assert.equal(evaluateDestination({ command: "connect", ip: "1.2.3.4", port: 443 }, opened), null);
    assert.equal(
      evaluateDestination({ command: "connect", ip: "1.2.3.4", port: 22 }, opened),
      ReplyCode.NotAllowed,
    );
  });
});
