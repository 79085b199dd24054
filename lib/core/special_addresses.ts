/**
 * IANA's IPv4 and IPv6 Special-Purpose Address Registries (and the multicast
 * and deprecated blocks beside them), as one table: what a proxy on the
 * public internet must not dial by default. Each row has the registry's
 * name, its RFC and whether the registry marks it globally reachable; the
 * most specific row that contains an address decides. Addresses that embed
 * an IPv4 address (IPv4-mapped and -compatible, NAT64, 6to4, Teredo) are
 * judged by the IPv4 address too.
 *
 * @module
 */
import { parseIPv4, parseIPv6 } from "./address.ts";

/**
 * One registry row.
 *
 * @example
 * ```ts
 * import { SPECIAL_PURPOSE_ADDRESSES } from "./special_addresses.ts";
 * const documentation = SPECIAL_PURPOSE_ADDRESSES.filter((r) => r.name.startsWith("Documentation"));
 * ```
 */
export interface SpecialRange {
  /** The block, as the registry writes it. */
  readonly block: string;
  /** The registry's name for it. */
  readonly name: string;
  /** Where it is defined. */
  readonly rfc: string;
  /**
   * "Globally Reachable" in the registry. A row that embeds an IPv4 address
   * is true where the registry says N/A (6to4, Teredo) or means the IPv6 form
   * itself (IPv4-mapped): the embedded address then decides.
   */
  readonly global: boolean;
  /** How an address in it embeds an IPv4 address, which is judged as well. */
  readonly embeds?: "mapped" | "nat64" | "6to4" | "teredo";
  /** 4 or 16 bytes, and the prefix length. */
  readonly bytes: Uint8Array;
  readonly prefix: number;
}

type Row = [block: string, name: string, rfc: string, global: boolean, embeds?: SpecialRange["embeds"]];

// IPv4: iana-ipv4-special-registry, plus multicast (224.0.0.0/4, RFC 5771).
const IPV4: Row[] = [
  ["0.0.0.0/8", '"This network"', "RFC 791", false],
  ["0.0.0.0/32", '"This host on this network"', "RFC 1122", false],
  ["10.0.0.0/8", "Private-Use", "RFC 1918", false],
  ["100.64.0.0/10", "Shared Address Space", "RFC 6598", false],
  ["127.0.0.0/8", "Loopback", "RFC 1122", false],
  ["169.254.0.0/16", "Link Local", "RFC 3927", false],
  ["172.16.0.0/12", "Private-Use", "RFC 1918", false],
  ["192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890", false],
  ["192.0.0.0/29", "IPv4 Service Continuity Prefix", "RFC 7335", false],
  ["192.0.0.8/32", "IPv4 dummy address", "RFC 7600", false],
  ["192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723", true],
  ["192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155", true],
  ["192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880", false],
  ["192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880", false],
  ["192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737", false],
  ["192.31.196.0/24", "AS112-v4", "RFC 7535", true],
  ["192.52.193.0/24", "AMT", "RFC 7450", true],
  ["192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526", false],
  ["192.168.0.0/16", "Private-Use", "RFC 1918", false],
  ["192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534", true],
  ["198.18.0.0/15", "Benchmarking", "RFC 2544", false],
  ["198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737", false],
  ["203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737", false],
  ["224.0.0.0/4", "Multicast", "RFC 5771", false],
  ["240.0.0.0/4", "Reserved", "RFC 1112", false],
  ["255.255.255.255/32", "Limited Broadcast", "RFC 919", false],
];

// IPv6: iana-ipv6-special-registry, plus multicast (ff00::/8, RFC 4291) and deprecated site-local (RFC 3879).
const IPV6: Row[] = [
  ["::1/128", "Loopback Address", "RFC 4291", false],
  ["::/128", "Unspecified Address", "RFC 4291", false],
  ["::/96", "IPv4-Compatible IPv6 Address (deprecated)", "RFC 4291", false, "mapped"],
  // The registry marks the mapped form itself not reachable; what a client means by it is the IPv4 address.
  ["::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291", true, "mapped"],
  ["64:ff9b::/96", "IPv4-IPv6 Translat.", "RFC 6052", true, "nat64"],
  ["64:ff9b:1::/48", "IPv4-IPv6 Translat. (local use)", "RFC 8215", false],
  ["100::/64", "Discard-Only Address Block", "RFC 6666", false],
  ["100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780", false],
  ["2001::/23", "IETF Protocol Assignments", "RFC 2928", false],
  ["2001::/32", "TEREDO", "RFC 4380", true, "teredo"],
  ["2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723", true],
  ["2001:1::2/128", "Traversal Using Relays around NAT Anycast", "RFC 8155", true],
  ["2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "RFC 9665", true],
  ["2001:2::/48", "Benchmarking", "RFC 5180", false],
  ["2001:3::/32", "AMT", "RFC 7450", true],
  ["2001:4:112::/48", "AS112-v6", "RFC 7535", true],
  ["2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843", false],
  ["2001:20::/28", "ORCHIDv2", "RFC 7343", true],
  ["2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374", true],
  ["2001:db8::/32", "Documentation", "RFC 3849", false],
  ["2002::/16", "6to4", "RFC 3056", true, "6to4"],
  ["2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534", true],
  ["3fff::/20", "Documentation", "RFC 9637", false],
  ["5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602", false],
  ["fc00::/7", "Unique-Local", "RFC 4193", false],
  ["fe80::/10", "Link-Local Unicast", "RFC 4291", false],
  ["fec0::/10", "Site-Local (deprecated)", "RFC 3879", false],
  ["ff00::/8", "Multicast", "RFC 4291", false],
];

function toRange([block, name, rfc, global, embeds]: Row): SpecialRange {
  const [addr, len] = block.split("/");
  const bytes = parseIPv4(addr) ?? parseIPv6(addr);
  if (!bytes) throw new TypeError(`bad block ${block}`);
  return { block, name, rfc, global, ...(embeds ? { embeds } : {}), bytes, prefix: Number(len) };
}

/**
 * Every row, IPv4 then IPv6, in the registries' order.
 *
 * @example
 * ```ts
 * import { SPECIAL_PURPOSE_ADDRESSES } from "./special_addresses.ts";
 * SPECIAL_PURPOSE_ADDRESSES.find((r) => r.block === "192.0.2.0/24")?.name; // "Documentation (TEST-NET-1)"
 * ```
 */
export const SPECIAL_PURPOSE_ADDRESSES: readonly SpecialRange[] = [...IPV4, ...IPV6].map(toRange);

/** True when `ip` (4 or 16 bytes) lies in the block. */
export function inBlock(ip: Uint8Array, bytes: Uint8Array, prefix: number): boolean {
  if (ip.length !== bytes.length) return false;
  let bits = prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((ip[i] & mask) !== (bytes[i] & mask)) return false;
  }
  return true;
}

/** The most specific row containing `ip`, if any. */
export function specialRange(ip: Uint8Array): SpecialRange | undefined {
  let best: SpecialRange | undefined;
  for (const r of SPECIAL_PURPOSE_ADDRESSES) {
    if ((!best || r.prefix > best.prefix) && inBlock(ip, r.bytes, r.prefix)) best = r;
  }
  return best;
}

/** The IPv4 addresses `v6` embeds by the way its row says (Teredo: the server and the client). */
function embedded(v6: Uint8Array, how: NonNullable<SpecialRange["embeds"]>): Uint8Array[] {
  if (how === "mapped" || how === "nat64") return [v6.slice(12)];
  if (how === "6to4") return [v6.slice(2, 6)];
  // Teredo: 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC, the client's address and port stored inverted.
  return [v6.slice(4, 8), v6.slice(12).map((b) => b ^ 0xff)];
}

/**
 * The row that makes `ip` not globally reachable, or null when it is: the
 * most specific row decides, and an embedded IPv4 address that is not
 * globally reachable makes the IPv6 address so too. `::` and `::1` are their
 * own rows, not IPv4-compatible addresses.
 *
 * @example
 * ```ts
 * import { parseIPv6 } from "./address.ts";
 * import { nonGlobalRange } from "./special_addresses.ts";
 * nonGlobalRange(parseIPv6("2002:7f00:1::1")!)?.name; // "Loopback": 6to4 of 127.0.0.1
 * ```
 */
export function nonGlobalRange(ip: Uint8Array): SpecialRange | null {
  const row = specialRange(ip);
  if (!row) return null;
  if (row.embeds && ip.length === 16) {
    for (const v4 of embedded(ip, row.embeds)) {
      const inner = nonGlobalRange(v4);
      if (inner) return inner;
    }
  }
  return row.global ? null : row;
}
