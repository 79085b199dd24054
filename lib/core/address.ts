/**
 * IP address text <-> bytes, with no runtime APIs.
 *
 * @module
 */

/**
 * What kind of host a request names.
 *
 * @example
 * ```ts
 * import type { HostType } from "@edgesocks/edgesocks";
 * const type: HostType = "domain"; // sent as SOCKS5 ATYP 0x03, or as a SOCKS4A name
 * ```
 */
export type HostType = "ipv4" | "ipv6" | "domain";

/**
 * A host and port as named in a request or reply.
 *
 * @example
 * ```ts
 * import type { SocksAddress } from "@edgesocks/edgesocks";
 * const target: SocksAddress = { host: "example.org", type: "domain", port: 443 };
 * ```
 */
export interface SocksAddress {
  /** Dotted quad, RFC 5952 IPv6 text, or a domain name. */
  host: string;
  /** How the host was given on the wire. */
  type: HostType;
  /** TCP port, 0-65535. */
  port: number;
}

/**
 * A host and port of a socket end.
 *
 * @example
 * ```ts
 * import type { HostPort } from "@edgesocks/edgesocks";
 * const show = (a: HostPort) => a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
 * ```
 */
export interface HostPort {
  /** IP address text (IPv4-mapped IPv6 is normalised to dotted quad by the adapters). */
  host: string;
  /** TCP port. */
  port: number;
}

/** `host:port`, or `[host]:port` for IPv6: how addresses are written in logs, flags and startup lines. */
export function formatHostPort(a: HostPort): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** Parses dotted-quad IPv4 text into 4 bytes, or returns null. Strict: no leading zeros, no shorthand. */
export function parseIPv4(text: string): Uint8Array | null {
  // By character codes: this runs several times per connection (policy, replies, canonical forms).
  if (text.length < 7 || text.length > 15) return null;
  const out = new Uint8Array(4);
  let part = 0, value = 0, digits = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || part > 3) return null;
      out[part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && value === 0) return null; // a leading zero
      value = value * 10 + (c - 0x30);
      if (++digits > 3 || value > 255) return null;
    } else {
      return null;
    }
  }
  return part === 4 ? out : null;
}

/** Parses IPv6 text (with `::`, and an optional trailing dotted quad) into 16 bytes, or returns null. */
export function parseIPv6(input: string): Uint8Array | null {
  let text = input;
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  if (text.length === 0 || text.length > 45 || text.includes("%")) return null;
  const out = new Uint8Array(16);
  const halves = text.split("::");
  if (halves.length > 2) return null;
  // A dotted quad may only end the whole address, never the part before `::`.
  const parseGroups = (s: string, last: boolean): number[] | null => {
    if (s === "") return [];
    const groups: number[] = [];
    const items = s.split(":");
    for (let i = 0; i < items.length; i++) {
      const g = items[i];
      if (last && i === items.length - 1 && g.includes(".")) {
        const v4 = parseIPv4(g);
        if (!v4) return null;
        groups.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
        groups.push(parseInt(g, 16));
      }
    }
    return groups;
  };
  const head = parseGroups(halves[0], halves.length === 1);
  const tail = halves.length === 2 ? parseGroups(halves[1], true) : [];
  if (!head || !tail) return null;
  if (halves.length === 1 && head.length !== 8) return null;
  if (halves.length === 2 && head.length + tail.length > 7) return null;
  const groups = [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
  for (let i = 0; i < 8; i++) {
    out[i * 2] = groups[i] >> 8;
    out[i * 2 + 1] = groups[i] & 0xff;
  }
  return out;
}

/** Formats 4 bytes as dotted-quad text. */
export function formatIPv4(bytes: Uint8Array): string {
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
}

/** Formats 16 bytes as canonical RFC 5952 IPv6 text (lower case, longest zero run as `::`). */
export function formatIPv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[i * 2] << 8) | bytes[i * 2 + 1]);
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]) => g.map((n) => n.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** Classifies host text: an IPv4 literal, an IPv6 literal, or a domain name. */
export function hostType(host: string): HostType {
  if (parseIPv4(host)) return "ipv4";
  if (parseIPv6(host)) return "ipv6";
  return "domain";
}

/**
 * Returns the canonical text of an IP literal, or null when `host` is not one.
 *
 * @example
 * ```ts
 * import { canonicalIP } from "@edgesocks/edgesocks";
 * canonicalIP("2001:DB8:0:0:0:0:0:1"); // "2001:db8::1"
 * canonicalIP("example.org"); // null
 * ```
 */
export function canonicalIP(host: string): string | null {
  const v4 = parseIPv4(host);
  if (v4) return formatIPv4(v4);
  const v6 = parseIPv6(host);
  if (v6) return formatIPv6(v6);
  return null;
}
