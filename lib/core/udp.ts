/**
 * The UDP ASSOCIATE datagram codec (RFC 1928 §7), sans-IO: every datagram
 * between a client and its relay carries
 *
 * ```
 * +-----+------+------+----------+----------+------+
 * | RSV | FRAG | ATYP | DST.ADDR | DST.PORT | DATA |
 * |  2  |  1   |  1   | variable |    2     | rest |
 * +-----+------+------+----------+----------+------+
 * ```
 *
 * A datagram that cannot be read is a value (`invalid`, with a reason), never
 * a throw: a bad datagram must not end an association.
 *
 * @module
 */
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6, type SocksAddress } from "./address.ts";
import { decodeName } from "./_socks_decode.ts";
import { AddressType } from "./wire.ts";

/**
 * A datagram read from a client: where it goes and what it carries.
 *
 * @example
 * ```ts
 * import { decodeUdpDatagram } from "@edgesocks/edgesocks";
 * const d = decodeUdpDatagram(Uint8Array.of(0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 0xab));
 * // { type: "datagram", frag: 0, target: { host: "127.0.0.1", type: "ipv4", port: 53 }, data: [ab] }
 * ```
 */
export interface UdpDatagram {
  /** Read. */
  type: "datagram";
  /** The fragment number; anything but 0 is a fragment, which edgesocks drops (fragmentation is optional). */
  frag: number;
  /** The destination as the client wrote it (a name is checked like a request's name). */
  target: SocksAddress;
  /** The payload: a view into the datagram, not a copy. */
  data: Uint8Array;
}

/**
 * A datagram that cannot be read.
 *
 * @example
 * ```ts
 * import { decodeUdpDatagram } from "@edgesocks/edgesocks";
 * decodeUdpDatagram(Uint8Array.of(0, 0, 0, 9)); // { type: "invalid", reason: "unknown address type 0x09" }
 * ```
 */
export interface UdpInvalid {
  /** Not read. */
  type: "invalid";
  /** Why, in words. */
  reason: string;
}

/** Bytes before the address: RSV (2), FRAG, ATYP. */
const HEAD = 4;

/**
 * Reads a client's datagram. Never throws; the reserved bytes are ignored,
 * as the request's reserved byte is.
 *
 * @example
 * ```ts
 * import { decodeUdpDatagram } from "@edgesocks/edgesocks";
 * const name = Uint8Array.of(0, 0, 0, 3, 4, 0x64, 0x6e, 0x73, 0x31, 0, 53, 1, 2); // "dns1":53
 * decodeUdpDatagram(name); // { type: "datagram", target: { host: "dns1", type: "domain", port: 53 }, ... }
 * ```
 */
export function decodeUdpDatagram(bytes: Uint8Array): UdpDatagram | UdpInvalid {
  if (bytes.length < HEAD) return { type: "invalid", reason: "shorter than a UDP request header" };
  const frag = bytes[2];
  const atyp = bytes[3];
  let host: string, type: SocksAddress["type"], end: number;
  if (atyp === AddressType.IPv4) {
    end = HEAD + 4;
    if (bytes.length < end + 2) return { type: "invalid", reason: "truncated IPv4 address" };
    host = formatIPv4(bytes.subarray(HEAD, end));
    type = "ipv4";
  } else if (atyp === AddressType.IPv6) {
    end = HEAD + 16;
    if (bytes.length < end + 2) return { type: "invalid", reason: "truncated IPv6 address" };
    host = formatIPv6(bytes.subarray(HEAD, end));
    type = "ipv6";
  } else if (atyp === AddressType.DomainName) {
    if (bytes.length < HEAD + 1) return { type: "invalid", reason: "truncated name" };
    end = HEAD + 1 + bytes[HEAD];
    if (bytes.length < end + 2) return { type: "invalid", reason: "truncated name" };
    const name = decodeName(bytes.subarray(HEAD + 1, end));
    if (name === null) return { type: "invalid", reason: "malformed domain name" };
    host = name;
    type = "domain";
  } else {
    return { type: "invalid", reason: `unknown address type 0x${atyp.toString(16).padStart(2, "0")}` };
  }
  const port = (bytes[end] << 8) | bytes[end + 1];
  return { type: "datagram", frag, target: { host, type, port }, data: bytes.subarray(end + 2) };
}

/**
 * The header length {@linkcode encodeUdpDatagram} writes for `host`: 10 for
 * IPv4 (and IPv4-mapped IPv6), 22 for IPv6.
 *
 * @example
 * ```ts
 * import { udpHeaderLength } from "@edgesocks/edgesocks";
 * const room = 65_507 - udpHeaderLength("2001:db8::1"); // the largest payload a reply from there can carry
 * ```
 */
export function udpHeaderLength(host: string): number {
  return parseIPv4(host) || isMapped(parseIPv6(host)) ? 10 : 22;
}

function isMapped(v6: Uint8Array | null): v6 is Uint8Array {
  return v6 !== null && v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
}

/**
 * Wraps `data` from `host:port` for the client: RSV 0, FRAG 0, and the
 * source as an IP address type (an IPv4-mapped IPv6 address as IPv4, ATYP
 * 1). Throws a `TypeError` when `host` is not an IP literal (a relay knows
 * the address a datagram came from).
 *
 * @example
 * ```ts
 * import { encodeUdpDatagram } from "@edgesocks/edgesocks";
 * encodeUdpDatagram("127.0.0.1", 53, Uint8Array.of(0xab)); // 00 00 00 01 7f 00 00 01 00 35 ab
 * ```
 */
export function encodeUdpDatagram(host: string, port: number, data: Uint8Array): Uint8Array {
  const v4 = parseIPv4(host);
  const v6 = v4 ? null : parseIPv6(host);
  const addr = v4 ?? (isMapped(v6) ? v6.subarray(12) : v6);
  if (!addr) throw new TypeError(`not an IP address: ${JSON.stringify(host)}`);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`bad port ${port}`);
  const out = new Uint8Array(HEAD + addr.length + 2 + data.length);
  out[3] = addr.length === 4 ? AddressType.IPv4 : AddressType.IPv6;
  out.set(addr, HEAD);
  out[HEAD + addr.length] = port >> 8;
  out[HEAD + addr.length + 1] = port & 0xff;
  out.set(data, HEAD + addr.length + 2);
  return out;
}
