/**
 * The one connect-error mapping every adapter's dial uses (lib/adapters/_errors.ts): each row of its
 * tables, the order they are tried in, the fallback, and a real refused connect on the running runtime.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import {
  CONNECT_ERROR_WORDS,
  CONNECT_ERRORS,
  connectError,
  connectReply,
  connectTimedOut,
  DENO_CONNECT_ERRORS,
} from "../lib/adapters/_errors.ts";
import { currentRuntime } from "../lib/cli/detect.ts";
import { SocksError } from "../lib/core/errors.ts";
import { ReplyCode } from "../lib/core/wire.ts";
import { RUNTIME } from "./_fixtures.ts";

/** An error as Node and Bun report it: a message and an errno code. */
function errno(code: string, message = `connect ${code} 192.0.2.1:80`): Error {
  return Object.assign(new Error(message), { code });
}

/** An error shaped like one of `Deno.errors`: a class name, maybe a code. */
function denoError(name: string, message: string, code?: string): Error {
  const e = new Error(message);
  e.name = name;
  return code === undefined ? e : Object.assign(e, { code });
}

// Written out here, not read from the module: a row changed there must fail here.
const BY_CODE: [string, ReplyCode][] = [
  ["ECONNREFUSED", ReplyCode.ConnectionRefused],
  ["EHOSTUNREACH", ReplyCode.HostUnreachable],
  ["EHOSTDOWN", ReplyCode.HostUnreachable],
  ["ENETUNREACH", ReplyCode.NetworkUnreachable],
  ["ENETDOWN", ReplyCode.NetworkUnreachable],
  ["ETIMEDOUT", ReplyCode.TtlExpired],
  ["EACCES", ReplyCode.NotAllowed],
  ["EPERM", ReplyCode.NotAllowed],
  ["ENOTFOUND", ReplyCode.HostUnreachable],
  ["EAI_AGAIN", ReplyCode.HostUnreachable],
  ["EAI_NONAME", ReplyCode.HostUnreachable],
];
const BY_CLASS: [string, ReplyCode][] = [
  ["ConnectionRefused", ReplyCode.ConnectionRefused],
  ["NetworkUnreachable", ReplyCode.NetworkUnreachable],
  ["TimedOut", ReplyCode.TtlExpired],
  ["PermissionDenied", ReplyCode.NotAllowed],
  ["NotCapable", ReplyCode.NotAllowed],
  ["NotFound", ReplyCode.HostUnreachable],
];
const BY_WORDS: [string, ReplyCode][] = [
  ["connect EHOSTUNREACH", ReplyCode.HostUnreachable],
  ["Host is unreachable (os error 113)", ReplyCode.HostUnreachable],
  ["host unreachable", ReplyCode.HostUnreachable],
  ["No route to host (os error 113)", ReplyCode.HostUnreachable],
  ["connect ENETUNREACH", ReplyCode.NetworkUnreachable],
  ["Network is unreachable (os error 101)", ReplyCode.NetworkUnreachable],
  ["network unreachable", ReplyCode.NetworkUnreachable],
  ["getaddrinfo ENOTFOUND example.invalid", ReplyCode.HostUnreachable],
  ["getaddrinfo EAI_FAIL example.invalid", ReplyCode.HostUnreachable],
  ["Name or service not known", ReplyCode.HostUnreachable],
  ["failed to resolve", ReplyCode.HostUnreachable],
  ["DNS lookup failed", ReplyCode.HostUnreachable],
];

describe("connect errors → SOCKS replies", () => {
  it("every errno code row", () => {
    assert.deepEqual(Object.entries(CONNECT_ERRORS), BY_CODE);
    for (const [code, reply] of BY_CODE) {
      assert.equal(connectReply(errno(code)), reply, code);
      // A code alone decides, whatever the message says.
      assert.equal(connectReply(errno(code, "no words here")), reply, code);
    }
  });

  it("every Deno error class row", () => {
    assert.deepEqual(Object.entries(DENO_CONNECT_ERRORS), BY_CLASS);
    for (const [name, reply] of BY_CLASS) assert.equal(connectReply(denoError(name, "x")), reply, name);
  });

  it("every message row, tried in order once neither table knows the error", () => {
    assert.equal(CONNECT_ERROR_WORDS.length, 3);
    for (const [text, reply] of BY_WORDS) {
      assert.equal(connectReply(new Error(text)), reply, text);
      assert.equal(connectReply(denoError("ConnectionReset", text)), reply, text);
    }
    // An unknown code still counts among the words: EAI_* (Node's getaddrinfo failures) means no such host.
    assert.equal(connectReply(errno("EAI_FAIL", "lookup failed badly")), ReplyCode.HostUnreachable);
    assert.equal(connectReply(errno("EAI_SERVICE", "x")), ReplyCode.HostUnreachable);
    // Earlier rows win: "host unreachable" before "name".
    assert.equal(connectReply(new Error("host unreachable by name")), ReplyCode.HostUnreachable);
    assert.equal(connectReply(new Error("network is unreachable: bad name")), ReplyCode.NetworkUnreachable);
  });

  it("the code comes before the class, the class before the words", () => {
    assert.equal(
      connectReply(denoError("ConnectionRefused", "x", "ETIMEDOUT")),
      ReplyCode.TtlExpired,
    );
    assert.equal(
      connectReply(denoError("TimedOut", "network is unreachable")),
      ReplyCode.TtlExpired,
    );
    assert.equal(
      connectReply(errno("ECONNREFUSED", "host unreachable")),
      ReplyCode.ConnectionRefused,
    );
  });

  it("falls back to GeneralFailure, for anything", () => {
    for (
      const e of [
        new Error("connect ECONNRESET"),
        errno("ECONNRESET", "read ECONNRESET"),
        errno("EADDRNOTAVAIL", "bind EADDRNOTAVAIL"),
        denoError("ConnectionReset", "Connection reset by peer (os error 104)"),
        denoError("BadResource", "Bad resource ID"),
        Object.assign(new Error("x"), { code: 111 }), // a numeric code is no errno name
        "a string",
        undefined,
        null,
        42,
        { code: "ESOMETHING" },
      ]
    ) {
      assert.equal(connectReply(e), ReplyCode.GeneralFailure, String(e));
    }
  });

  it("a dial's error says where, why, and keeps its cause", () => {
    const cause = errno("ECONNREFUSED", "connect ECONNREFUSED 192.0.2.1:80");
    const e = connectError(cause, "192.0.2.1", 80);
    assert.ok(e instanceof SocksError);
    assert.equal(e.reply, ReplyCode.ConnectionRefused);
    assert.equal(e.message, "connect to 192.0.2.1:80 failed: connect ECONNREFUSED 192.0.2.1:80");
    assert.equal(e.cause, cause);
    // A code the message does not mention is added once; a missing one is not made up.
    const deno = denoError("ConnectionRefused", "Connection refused (os error 111)", "ECONNREFUSED");
    assert.equal(
      connectError(deno, "::1", 9).message,
      "connect to ::1:9 failed: Connection refused (os error 111) (ECONNREFUSED)",
    );
    assert.equal(connectError(new Error("boom"), "h", 1).message, "connect to h:1 failed: boom");
    const t = connectTimedOut(cause);
    assert.deepEqual([t.reply, t.message, t.cause], [ReplyCode.TtlExpired, "connect timed out", cause]);
    assert.equal("cause" in connectTimedOut(), false);
  });

  it(`a real refused connect on ${RUNTIME} is ConnectionRefused, and a timed-out one TtlExpired`, async () => {
    const { adapter } = await currentRuntime();
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    await new Promise((resolve) => server.close(resolve));
    await assert.rejects(
      adapter.dial({ host: "127.0.0.1", port, signal: AbortSignal.timeout(5_000) }),
      (e) => {
        assert.ok(e instanceof SocksError, String(e));
        assert.equal(e.reply, ReplyCode.ConnectionRefused, e.message);
        assert.match(e.message, new RegExp(`^connect to 127\\.0\\.0\\.1:${port} failed: `));
        return true;
      },
    );
    await assert.rejects(adapter.dial({ host: "127.0.0.1", port, signal: AbortSignal.abort() }), (e) => {
      assert.ok(e instanceof SocksError, String(e));
      assert.deepEqual([e.reply, e.message], [ReplyCode.TtlExpired, "connect timed out"]);
      return true;
    });
  });
});
