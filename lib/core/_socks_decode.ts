/**
 * Readers of the SOCKS messages a client sends: bytes in, fields out. They
 * decide nothing (which commands are served, whether SOCKS4 is allowed): the
 * states in `_socks_states.ts` do.
 *
 * @module
 */
import { formatIPv4, formatIPv6, type SocksAddress } from "./address.ts";
import { AddressType, Limits, SocksVersion } from "./wire.ts";

/** Not enough bytes yet for the whole message. */
export const INCOMPLETE = { type: "incomplete" } as const;

/** A message that cannot be read: `consumed` bytes are spent on it, `reason` says why in words. */
export interface Unreadable {
  type: "unreadable";
  consumed: number;
  reason: string;
}

/** Decodes a host name, refusing empty names, NUL, controls, spaces and non-ASCII. */
export function decodeName(bytes: Uint8Array): string | null {
  if (bytes.length === 0) return null;
  let s = "";
  for (const b of bytes) {
    if (b <= 0x20 || b >= 0x7f) return null;
    s += String.fromCharCode(b);
  }
  return s;
}

/** Bytes as Latin-1 text: user names and SOCKS4 user ids are reported as sent. */
export function decodeLatin1(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

/** RFC 1928 section 3: `05 NMETHODS METHODS` (the version byte is already known). */
export function readGreeting(
  data: Uint8Array,
): typeof INCOMPLETE | { type: "greeting"; consumed: number; methods: Uint8Array } {
  if (data.length < 2) return INCOMPLETE;
  const n = data[1];
  if (data.length < 2 + n) return INCOMPLETE;
  return { type: "greeting", consumed: 2 + n, methods: data.subarray(2, 2 + n) };
}

/** RFC 1929 section 2: `01 ULEN UNAME PLEN PASSWD`. A wrong version is unreadable at once. */
export function readAuth(
  data: Uint8Array,
):
  | typeof INCOMPLETE
  | Unreadable
  | { type: "auth"; consumed: number; user: Uint8Array; password: Uint8Array } {
  if (data[0] !== SocksVersion.UserPassAuth) {
    return { type: "unreadable", consumed: data.length, reason: "bad auth version" };
  }
  if (data.length < 2) return INCOMPLETE;
  const ulen = data[1];
  if (data.length < 3 + ulen) return INCOMPLETE;
  const plen = data[2 + ulen];
  const end = 3 + ulen + plen;
  if (data.length < end) return INCOMPLETE;
  return {
    type: "auth",
    consumed: end,
    user: data.subarray(2, 2 + ulen),
    password: data.subarray(3 + ulen, end),
  };
}

/** A SOCKS5 request whose address type is known, its name (if any) not yet checked. */
export interface Socks5Request {
  type: "socks5_request";
  consumed: number;
  cmd: number;
  /** The address as sent; a name (ATYP 3) is `null` when it is not a valid host name. */
  target: SocksAddress | null;
}

/**
 * RFC 1928 section 4: `05 CMD RSV ATYP DST.ADDR DST.PORT`. A wrong version or
 * an unknown ATYP is unreadable as soon as it is seen (`badAddressType` tells
 * the two apart: they are refused with different replies).
 */
export function readSocks5Request(
  data: Uint8Array,
): typeof INCOMPLETE | (Unreadable & { badAddressType: boolean }) | Socks5Request {
  if (data[0] !== SocksVersion.Socks5) {
    return {
      type: "unreadable",
      consumed: data.length,
      reason: "bad request version",
      badAddressType: false,
    };
  }
  if (data.length < 4) return INCOMPLETE;
  const cmd = data[1];
  const atyp = data[3];
  let addrLen: number;
  if (atyp === AddressType.IPv4) addrLen = 4;
  else if (atyp === AddressType.IPv6) addrLen = 16;
  else if (atyp === AddressType.DomainName) {
    if (data.length < 5) return INCOMPLETE;
    addrLen = 1 + data[4];
  } else {
    return {
      type: "unreadable",
      consumed: data.length,
      reason: `bad address type 0x${atyp.toString(16)}`,
      badAddressType: true,
    };
  }
  const end = 4 + addrLen + 2;
  if (data.length < end) return INCOMPLETE;
  const addr = data.subarray(4, 4 + addrLen);
  const port = (data[end - 2] << 8) | data[end - 1];
  let target: SocksAddress | null;
  if (atyp === AddressType.IPv4) target = { host: formatIPv4(addr), type: "ipv4", port };
  else if (atyp === AddressType.IPv6) target = { host: formatIPv6(addr), type: "ipv6", port };
  else {
    const name = decodeName(addr.subarray(1));
    target = name === null ? null : { host: name, type: "domain", port };
  }
  return { type: "socks5_request", consumed: end, cmd, target };
}

/** A SOCKS4 or SOCKS4A request; `target` is `null` when a SOCKS4A name is not a valid host name. */
export interface Socks4Request {
  type: "socks4_request";
  consumed: number;
  cmd: number;
  user: string;
  target: SocksAddress | null;
}

/**
 * SOCKS4 `04 CD DSTPORT DSTIP USERID 00`, and SOCKS4A (DSTIP 0.0.0.x, x ≠ 0)
 * with `HOST 00` after it. The limits are checked whether or not the NUL has
 * arrived, so chunking never changes the outcome.
 */
export function readSocks4Request(data: Uint8Array): typeof INCOMPLETE | Unreadable | Socks4Request {
  if (data.length < 8) return INCOMPLETE;
  const cmd = data[1];
  const port = (data[2] << 8) | data[3];
  const ip = data.subarray(4, 8);
  const userEnd = data.indexOf(0, 8);
  if ((userEnd < 0 ? data.length : userEnd) - 8 > Limits.MaxSocks4UserId) {
    return { type: "unreadable", consumed: data.length, reason: "SOCKS4 user id too long" };
  }
  if (userEnd < 0) return INCOMPLETE;
  const user = decodeLatin1(data.subarray(8, userEnd));
  const end = userEnd + 1;
  const isSocks4a = ip[0] === 0 && ip[1] === 0 && ip[2] === 0 && ip[3] !== 0;
  if (!isSocks4a) {
    return {
      type: "socks4_request",
      consumed: end,
      cmd,
      user,
      target: { host: formatIPv4(ip), type: "ipv4", port },
    };
  }
  const hostEnd = data.indexOf(0, end);
  if ((hostEnd < 0 ? data.length : hostEnd) - end > Limits.MaxSocks4Host) {
    return { type: "unreadable", consumed: data.length, reason: "SOCKS4A host name too long" };
  }
  if (hostEnd < 0) return INCOMPLETE;
  const name = decodeName(data.subarray(end, hostEnd));
  return {
    type: "socks4_request",
    consumed: hostEnd + 1,
    cmd,
    user,
    target: name === null ? null : { host: name, type: "domain", port },
  };
}
