/**
 * The sans-IO PROXY protocol header parser (HAProxy's PROXY protocol,
 * version 1 text and version 2 binary, as in its `proxy-protocol.txt`): bytes
 * in, a step out. A load balancer in front of the proxy sends this header
 * first on each connection, naming the client it relays for. No awaits,
 * timers or runtime globals; any chunking gives the same result, down to one
 * byte at a time. It buffers at most {@linkcode PROXY_MAX_BUFFERED} bytes:
 * version 2 TLVs (up to 64 KiB) are checked and skipped as they arrive,
 * never held.
 *
 * @module
 */
import { formatIPv4, formatIPv6, type HostPort, parseIPv4, parseIPv6 } from "./address.ts";

/**
 * The 12 bytes that start a version 2 header.
 *
 * @example
 * ```ts
 * import { PROXY_V2_SIGNATURE } from "@edgesocks/edgesocks";
 * const looksLikeV2 = (b: Uint8Array) => PROXY_V2_SIGNATURE.every((x, i) => b[i] === x);
 * ```
 */
export const PROXY_V2_SIGNATURE: Uint8Array = Uint8Array.of(
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
);

/**
 * The longest version 1 line, CRLF included (`PROXY UNKNOWN` with two IPv6 addresses and ports): 107.
 *
 * @example
 * ```ts
 * import { PROXY_V1_MAX_LINE } from "@edgesocks/edgesocks";
 * const line = new Uint8Array(PROXY_V1_MAX_LINE); // room for any version 1 header
 * ```
 */
export const PROXY_V1_MAX_LINE = 107;

/** Version 2: the fixed part (signature, version/command, family/transport, length). */
const V2_FIXED = 16;
/** Version 2 address blocks by family: AF_INET, AF_INET6, AF_UNIX. */
const V2_ADDRESS_BYTES = [0, 12, 36, 216] as const;

/**
 * The most bytes a parser ever holds: a version 2 fixed part and a Unix address block (232).
 *
 * @example
 * ```ts
 * import { PROXY_MAX_BUFFERED, ProxyHeaderParser } from "@edgesocks/edgesocks";
 * const parser = new ProxyHeaderParser();
 * parser.receive(new Uint8Array([0x0d, 0x0a]));
 * console.assert(parser.buffered <= PROXY_MAX_BUFFERED);
 * ```
 */
export const PROXY_MAX_BUFFERED: number = V2_FIXED + V2_ADDRESS_BYTES[3];

const V1_PREFIX = Uint8Array.from("PROXY ", (c) => c.charCodeAt(0));
const V1_PROTOCOLS = ["TCP4 ", "TCP6 ", "UNKNOWN"];
const CR = 0x0d, LF = 0x0a;

/**
 * A parsed PROXY protocol header.
 *
 * - `command`: `"proxy"`, relayed for a client; `"local"` (version 2 only), the balancer's own
 *   connection (a health check): use the connection's real peer.
 * - `family`: what the header names: `"inet"` (TCP4), `"inet6"` (TCP6), `"unix"` (version 2
 *   AF_UNIX), `"unspec"` (version 1 `UNKNOWN`, version 2 AF_UNSPEC, and every LOCAL header).
 * - `source` / `destination`: the relayed connection's endpoints, present only when the header names
 *   TCP over IPv4 or IPv6 (version 2: family INET or INET6 with transport STREAM). Absent means: keep
 *   the connection's real peer.
 *
 * @example
 * ```ts
 * import type { ProxyHeader } from "@edgesocks/edgesocks";
 * const client = (h: ProxyHeader, peer: { host: string; port: number }) => h.source ?? peer;
 * ```
 */
export interface ProxyHeader {
  /** 1 (text) or 2 (binary). */
  version: 1 | 2;
  /** `"proxy"` or `"local"`. */
  command: "proxy" | "local";
  /** The address family the header names. */
  family: "inet" | "inet6" | "unix" | "unspec";
  /** The original client (TCP over IPv4/IPv6 only). */
  source?: HostPort;
  /** The address the client connected to (TCP over IPv4/IPv6 only). */
  destination?: HostPort;
}

/**
 * What one call to {@linkcode ProxyHeaderParser.receive} gives:
 *
 * - `need_more`: read more bytes, then call `receive()` again.
 * - `header`: the header is complete; `rest` holds the bytes that followed it in the same chunk (the
 *   start of the real protocol, e.g. a SOCKS greeting), owned by the caller.
 * - `invalid`: not a PROXY protocol header, or a malformed one; close the connection without a reply.
 *   The verdict comes as soon as the bytes so far cannot start a valid header.
 *
 * @example
 * ```ts
 * import type { ProxyHeaderStep } from "@edgesocks/edgesocks";
 * const done = (s: ProxyHeaderStep) => s.type !== "need_more";
 * ```
 */
export type ProxyHeaderStep =
  | { type: "need_more" }
  | { type: "header"; header: ProxyHeader; rest: Uint8Array }
  | { type: "invalid"; reason: string };

type State = "start" | "v1" | "v2_fixed" | "v2_address" | "v2_tlv" | "done";

/**
 * One connection's PROXY protocol header (version 1 or 2, told apart by the
 * first byte). Feed it the connection's first bytes with
 * {@linkcode ProxyHeaderParser.receive} until it answers `header` or
 * `invalid`; a call after that is the driver's misuse (a `TypeError`). A
 * peer's bytes never make it throw.
 *
 * Strict where the specification is: version 1 is exactly
 * `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` (single spaces, no leading zeros,
 * at most 107 bytes) or `PROXY UNKNOWN...\r\n`; version 2 must have version
 * 2, command LOCAL or PROXY, a defined family and transport, an address
 * block as long as its family needs, and TLVs that fit the length exactly.
 *
 * @example
 * ```ts
 * import { ProxyHeaderParser } from "@edgesocks/edgesocks";
 * const parser = new ProxyHeaderParser();
 * const line = new TextEncoder().encode("PROXY TCP4 192.0.2.7 127.0.0.1 40000 1080\r\n\x05\x01\x00");
 * const step = parser.receive(line);
 * // { type: "header", header: { version: 1, command: "proxy", family: "inet",
 * //   source: { host: "192.0.2.7", port: 40000 }, destination: ... }, rest: [05 01 00] }
 * ```
 */
export class ProxyHeaderParser {
  #state: State = "start";
  #buffer = new Uint8Array(0);
  #length = 0;
  // Version 2: what the fixed part said, and how much of the TLV area is left.
  #command: "proxy" | "local" = "proxy";
  #family = 0;
  #transport = 0;
  #addressBytes = 0;
  #tlvLeft = 0;
  // Within the TLV area: bytes of the current TLV's 3-byte head seen, its length's high byte, and the
  // bytes of its value still to skip.
  #tlvHead = 0;
  #tlvHigh = 0;
  #valueLeft = 0;
  #header: ProxyHeader | undefined;

  /** Bytes held while waiting for the rest of the header (never more than {@linkcode PROXY_MAX_BUFFERED}). */
  get buffered(): number {
    return this.#length;
  }

  /** True once the parser has given `header` or `invalid`. */
  get done(): boolean {
    return this.#state === "done";
  }

  /** Feeds the connection's next bytes. Throws a `TypeError` once the parser has given its verdict. */
  receive(chunk: Uint8Array): ProxyHeaderStep {
    if (this.#state === "done") throw new TypeError("receive() after the PROXY header was decided");
    const step = this.#receive(chunk);
    if (step.type !== "need_more") {
      this.#state = "done";
      this.#buffer = new Uint8Array(0);
      this.#length = 0;
    }
    return step;
  }

  #receive(chunk: Uint8Array): ProxyHeaderStep {
    let i = 0;
    if (this.#state === "start") {
      if (chunk.length === 0) return NEED_MORE;
      if (chunk[0] === V1_PREFIX[0]) {
        this.#state = "v1";
        this.#buffer = new Uint8Array(PROXY_V1_MAX_LINE);
      } else if (chunk[0] === PROXY_V2_SIGNATURE[0]) {
        this.#state = "v2_fixed";
        this.#buffer = new Uint8Array(V2_FIXED);
      } else return invalid("not a PROXY protocol header");
    }
    if (this.#state === "v1") return this.#v1(chunk);
    while (true) {
      if (this.#state === "v2_fixed") {
        while (i < chunk.length && this.#length < V2_FIXED) {
          const at = this.#length;
          const b = chunk[i++];
          if (at < PROXY_V2_SIGNATURE.length && b !== PROXY_V2_SIGNATURE[at]) {
            return invalid("not a PROXY protocol header (bad version 2 signature)");
          }
          this.#buffer[this.#length++] = b;
          if (at === 12) {
            if (b >> 4 !== 2) return invalid(`PROXY protocol version ${b >> 4} (only 1 and 2 exist)`);
            if ((b & 0x0f) > 1) {
              return invalid(`PROXY protocol v2 command 0x${hex(b & 0x0f)} (neither LOCAL nor PROXY)`);
            }
          } else if (at === 13) {
            if (b >> 4 > 3) {
              return invalid(`PROXY protocol v2 address family 0x${hex(b >> 4)} is not defined`);
            }
            if ((b & 0x0f) > 2) {
              return invalid(`PROXY protocol v2 transport 0x${hex(b & 0x0f)} is not defined`);
            }
          }
        }
        if (this.#length < V2_FIXED) return NEED_MORE;
        this.#v2Fixed();
        const need = this.#addressBytes;
        const declared = this.#tlvLeft;
        if (declared < need) {
          return invalid(
            `PROXY protocol v2 address block of ${declared} bytes; its family needs ${need}`,
          );
        }
        this.#tlvLeft = declared - need;
        this.#buffer = new Uint8Array(need);
        this.#length = 0;
        this.#state = "v2_address";
      }
      if (this.#state === "v2_address") {
        const take = Math.min(chunk.length - i, this.#addressBytes - this.#length);
        this.#buffer.set(chunk.subarray(i, i + take), this.#length);
        this.#length += take;
        i += take;
        if (this.#length < this.#addressBytes) return NEED_MORE;
        this.#header = this.#v2Header();
        this.#state = "v2_tlv";
      }
      // The TLV area (or, for LOCAL and UNSPEC, the whole opaque block): checked and skipped as it comes.
      while (this.#tlvLeft > 0 && i < chunk.length) {
        if (this.#addressBytes === 0) {
          const skip = Math.min(this.#tlvLeft, chunk.length - i);
          this.#tlvLeft -= skip;
          i += skip;
        } else if (this.#valueLeft > 0) {
          const skip = Math.min(this.#valueLeft, chunk.length - i);
          this.#valueLeft -= skip;
          this.#tlvLeft -= skip;
          i += skip;
        } else {
          const b = chunk[i++];
          this.#tlvLeft--;
          if (this.#tlvHead === 0) this.#tlvHead = 1;
          else if (this.#tlvHead === 1) {
            this.#tlvHigh = b;
            this.#tlvHead = 2;
          } else {
            this.#tlvHead = 0;
            this.#valueLeft = (this.#tlvHigh << 8) | b;
            if (this.#valueLeft > this.#tlvLeft) {
              return invalid(
                `PROXY protocol v2 TLV of ${this.#valueLeft} bytes overruns the header (${this.#tlvLeft} left)`,
              );
            }
          }
        }
      }
      if (this.#tlvLeft > 0) return NEED_MORE;
      if (this.#tlvHead !== 0) return invalid("PROXY protocol v2 header ends inside a TLV");
      return { type: "header", header: this.#header!, rest: chunk.subarray(i) };
    }
  }

  /** Reads the version 2 fixed part: command, family, transport, and how many address bytes to parse. */
  #v2Fixed(): void {
    const b = this.#buffer;
    this.#command = (b[12] & 0x0f) === 0 ? "local" : "proxy";
    this.#family = b[13] >> 4;
    this.#transport = b[13] & 0x0f;
    // Set aside as the whole remaining length until the address block's share is known.
    this.#tlvLeft = (b[14] << 8) | b[15];
    // LOCAL: the block is ignored, family and all. UNSPEC family or transport: "the receiver should
    // ignore address information", so the block is opaque (no TLV walk: where it would start is unknown).
    this.#addressBytes = this.#command === "local" || this.#transport === 0
      ? 0
      : V2_ADDRESS_BYTES[this.#family];
  }

  #v2Header(): ProxyHeader {
    if (this.#command === "local") return { version: 2, command: "local", family: "unspec" };
    const family = (["unspec", "inet", "inet6", "unix"] as const)[this.#family];
    // Only TCP names a client we can use; UDP and AF_UNIX fall back to UNSPEC, as the specification
    // tells receivers that do not support them: the real peer stays the client.
    if (this.#transport !== 1 || (family !== "inet" && family !== "inet6")) {
      return { version: 2, command: "proxy", family: this.#transport === 0 ? "unspec" : family };
    }
    const a = this.#buffer;
    const size = family === "inet" ? 4 : 16;
    const format = family === "inet" ? formatIPv4 : formatIPv6;
    const port = (at: number) => (a[at] << 8) | a[at + 1];
    return {
      version: 2,
      command: "proxy",
      family,
      source: { host: format(a.subarray(0, size)), port: port(2 * size) },
      destination: { host: format(a.subarray(size, 2 * size)), port: port(2 * size + 2) },
    };
  }

  #v1(chunk: Uint8Array): ProxyHeaderStep {
    const buffer = this.#buffer;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      const at = this.#length;
      if (at > 0 && buffer[at - 1] === CR) {
        if (b !== LF) return invalid("PROXY protocol v1 line has a CR without LF");
        return parseV1(buffer.subarray(0, at - 1), chunk.subarray(i + 1));
      }
      if (at < V1_PREFIX.length) {
        if (b !== V1_PREFIX[at]) return invalid("not a PROXY protocol header");
      } else if (b === LF) return invalid("PROXY protocol v1 line ends in LF without CR");
      else if (b !== CR && (b < 0x20 || b > 0x7e)) {
        return invalid("PROXY protocol v1 line holds a byte that is not printable ASCII");
      }
      buffer[this.#length++] = b;
      if (at >= V1_PREFIX.length && at < V1_PREFIX.length + 7) {
        const word = String.fromCharCode(...buffer.subarray(V1_PREFIX.length, at + 1));
        if (!V1_PROTOCOLS.some((p) => p.startsWith(word) || word.startsWith(p))) {
          return invalid("PROXY protocol v1 protocol is none of TCP4, TCP6, UNKNOWN");
        }
      }
      if (this.#length === PROXY_V1_MAX_LINE) {
        return invalid(`PROXY protocol v1 line without CRLF in ${PROXY_V1_MAX_LINE} bytes`);
      }
    }
    return NEED_MORE;
  }
}

const NEED_MORE: ProxyHeaderStep = Object.freeze({ type: "need_more" });

function invalid(reason: string): ProxyHeaderStep {
  return { type: "invalid", reason };
}

function hex(n: number): string {
  return n.toString(16);
}

const PORT = /^(0|[1-9][0-9]{0,4})$/;

/** Parses a complete version 1 line (without its CRLF). */
function parseV1(line: Uint8Array, rest: Uint8Array): ProxyHeaderStep {
  const text = String.fromCharCode(...line);
  const parts = text.split(" ");
  if (parts[1] === "UNKNOWN") {
    // "the receiver must ignore anything presented before the CRLF is found"
    return { type: "header", header: { version: 1, command: "proxy", family: "unspec" }, rest };
  }
  if (parts[1] !== "TCP4" && parts[1] !== "TCP6") {
    return invalid("PROXY protocol v1 protocol is none of TCP4, TCP6, UNKNOWN");
  }
  if (parts.length !== 6) {
    return invalid("PROXY protocol v1 line needs PROXY, protocol, two addresses and two ports");
  }
  const [, protocol, src, dst, sport, dport] = parts;
  const v4 = protocol === "TCP4";
  const address = (t: string): string | null => {
    if (v4) return parseIPv4(t) ? t : null;
    if (!/^[0-9A-Fa-f:.]+$/.test(t)) return null;
    const bytes = parseIPv6(t);
    return bytes ? formatIPv6(bytes) : null;
  };
  const source = address(src), destination = address(dst);
  if (source === null || destination === null) {
    return invalid(`PROXY protocol v1 address is not ${v4 ? "IPv4" : "IPv6"}`);
  }
  const port = (t: string) => PORT.test(t) && Number(t) <= 65535 ? Number(t) : -1;
  const sp = port(sport), dp = port(dport);
  if (sp < 0 || dp < 0) return invalid("PROXY protocol v1 port is not 0 to 65535 (no leading zeros)");
  return {
    type: "header",
    header: {
      version: 1,
      command: "proxy",
      family: v4 ? "inet" : "inet6",
      source: { host: source, port: sp },
      destination: { host: destination, port: dp },
    },
    rest,
  };
}
