/**
 * Destination policy as data, checked by pure functions on the address
 * actually dialled (after name resolution).
 *
 * @module
 */
import { parseIPv4, parseIPv6 } from "./core/address.ts";
import type { RequestKind } from "./core/machine.ts";
import { ReplyCode } from "./core/wire.ts";

/** An address range in CIDR form, parsed. */
export interface Cidr {
  /** 4 or 16 bytes. */
  bytes: Uint8Array;
  /** Prefix length in bits. */
  prefix: number;
  /** The text it was parsed from. */
  text: string;
}

/** Parses `a.b.c.d/n` or `v6::/n` (a bare address is a /32 or /128); throws on bad input. */
export function parseCidr(text: string): Cidr {
  const [addr, len, extra] = text.split("/");
  const bytes = parseIPv4(addr) ?? parseIPv6(addr);
  const max = bytes ? bytes.length * 8 : 0;
  const prefix = len === undefined ? max : /^\d{1,3}$/.test(len) ? Number(len) : -1;
  if (!bytes || extra !== undefined || prefix < 0 || prefix > max) {
    throw new TypeError(`invalid CIDR range: ${JSON.stringify(text)}`);
  }
  return { bytes, prefix, text };
}

function inCidr(ip: Uint8Array, range: Cidr): boolean {
  if (ip.length !== range.bytes.length) return false;
  let bits = range.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((ip[i] & mask) !== (range.bytes[i] & mask)) return false;
  }
  return true;
}

/**
 * Ranges refused by default: not on the public internet, or reaching the
 * proxy host itself or its neighbours.
 */
export const NON_PUBLIC_RANGES: readonly Cidr[] = [
  "0.0.0.0/8", // "this network", includes the unspecified address
  "10.0.0.0/8", // private
  "100.64.0.0/10", // carrier-grade NAT
  "127.0.0.0/8", // loopback
  "169.254.0.0/16", // link-local, cloud metadata
  "172.16.0.0/12", // private
  "192.0.0.0/24", // IETF protocol assignments
  "192.168.0.0/16", // private
  "198.18.0.0/15", // benchmarking
  "224.0.0.0/4", // multicast
  "240.0.0.0/4", // reserved, broadcast
  "::/128", // unspecified
  "::1/128", // loopback
  "fc00::/7", // unique local
  "fe80::/10", // link-local
  "fec0::/10", // deprecated site-local
  "ff00::/8", // multicast
  "100::/64", // discard
].map(parseCidr);

/** Bytes of the IPv4 address an IPv6 address stands for (mapped, compatible, NAT64), if any. */
function embeddedIPv4(v6: Uint8Array): Uint8Array | null {
  const zeros = (a: number, b: number) => v6.subarray(a, b).every((x) => x === 0);
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (deprecated compatible; ::/::1 are handled as IPv6)
  if (zeros(0, 10) && v6[10] === 0xff && v6[11] === 0xff) return v6.slice(12);
  if (zeros(0, 12) && !zeros(12, 15)) return v6.slice(12);
  // 64:ff9b::/96 (NAT64 well-known prefix)
  if (v6[0] === 0 && v6[1] === 0x64 && v6[2] === 0xff && v6[3] === 0x9b && zeros(4, 12)) return v6.slice(12);
  return null;
}

/** Parses an IP literal into bytes, reducing IPv6 forms that embed an IPv4 address to that IPv4 address. */
export function effectiveAddress(ip: string): Uint8Array | null {
  const v4 = parseIPv4(ip);
  if (v4) return v4;
  const v6 = parseIPv6(ip);
  if (!v6) return null;
  return embeddedIPv4(v6) ?? v6;
}

/** True when `ip` is in a loopback, private, link-local, CGNAT, multicast, unspecified or other non-public range. */
export function isNonPublicAddress(ip: string): boolean {
  const bytes = effectiveAddress(ip);
  if (!bytes) return true; // not an IP literal: never dial it unchecked
  return NON_PUBLIC_RANGES.some((r) => inCidr(bytes, r));
}

/** Which destinations the server may dial. Plain data, built from flags. */
export interface DestinationPolicy {
  /** Allow loopback, private, link-local, CGNAT, multicast and unspecified destinations. Default false. */
  allowPrivate: boolean;
  /** Serve Tor's CONNECT_DIR (0xF2) as a tunnel. Default true. */
  allowConnectDir: boolean;
}

/** The safe default: public destinations only, CONNECT_DIR allowed. */
export const DEFAULT_POLICY: DestinationPolicy = { allowPrivate: false, allowConnectDir: true };

/**
 * Checks a request kind against the policy before any work is done. Returns
 * the reply code to refuse with, or null when allowed.
 */
export function checkCommand(kind: RequestKind, policy: DestinationPolicy): ReplyCode | null {
  if (kind === "connect_dir" && !policy.allowConnectDir) return ReplyCode.NotAllowed;
  return null;
}

/**
 * Checks an address about to be dialled. Returns the reply code to refuse
 * with (NotAllowed), or null when allowed.
 *
 * @example
 * ```ts
 * import { checkDestination, DEFAULT_POLICY } from "./mod.ts";
 * checkDestination("::ffff:127.0.0.1", DEFAULT_POLICY); // ReplyCode.NotAllowed (0x02)
 * checkDestination("93.184.216.34", DEFAULT_POLICY); // null
 * ```
 */
export function checkDestination(ip: string, policy: DestinationPolicy): ReplyCode | null {
  if (!policy.allowPrivate && isNonPublicAddress(ip)) return ReplyCode.NotAllowed;
  if (effectiveAddress(ip) === null) return ReplyCode.NotAllowed;
  return null;
}
