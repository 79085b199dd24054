/** Admission bookkeeping: which client a connection counts for, and the failed-login backoff. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { clientKey, LoginBackoff } from "../lib/admission.ts";

describe("admission", () => {
  it("IPv6 clients count per prefix (a /64 by default); IPv4 and IPv4-mapped per address", () => {
    assert.equal(clientKey("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::/64");
    assert.equal(clientKey("2001:db8:1:2:bbbb::9", 64), "2001:db8:1:2::/64");
    assert.equal(clientKey("2001:db8:1:3::1", 64), "2001:db8:1:3::/64");
    assert.equal(clientKey("2001:db8:1:2:aaaa::1", 48), "2001:db8:1::/48");
    assert.equal(clientKey("2001:db8:1:2:aaaa::1", 128), "2001:db8:1:2:aaaa::1");
    assert.equal(clientKey("2001:db8:1:2:aaaa::1", 60), "2001:db8:1::/60");
    assert.equal(clientKey("192.0.2.7", 64), "192.0.2.7");
    assert.equal(clientKey("::ffff:192.0.2.7", 64), "192.0.2.7");
  });

  it("failed logins block a client after the limit within the window, until the block ends", () => {
    const b = new LoginBackoff({ failures: 3, windowMs: 1_000, blockMs: 5_000 });
    assert.equal(b.failed("a", 0), false);
    assert.equal(b.failed("a", 10), false);
    assert.equal(b.blocked("a", 20), false);
    assert.equal(b.failed("a", 20), true, "the third failure starts the block");
    assert.equal(b.blocked("a", 21), true);
    assert.equal(b.blocked("b", 21), false, "other clients are not affected");
    assert.equal(b.blocked("a", 5_019), true);
    assert.equal(b.blocked("a", 5_020), false, "the block ends");
    assert.equal(b.size, 0, "and is forgotten");
  });

  it("failures spread wider than the window never block", () => {
    const b = new LoginBackoff({ failures: 3, windowMs: 1_000, blockMs: 5_000 });
    for (let t = 0; t < 10_000; t += 600) assert.equal(b.failed("a", t), false, `at ${t}`);
    assert.equal(b.blocked("a", 10_000), false);
  });

  it("remembers a bounded number of clients", () => {
    const b = new LoginBackoff({ failures: 1_000, windowMs: 60_000, blockMs: 60_000 });
    for (let i = 0; i < 70_000; i++) b.failed(`client ${i}`, i);
    assert.equal(b.size, 65_536);
  });
});
