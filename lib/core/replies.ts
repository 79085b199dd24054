/**
 * Encoders for every message the server sends.
 *
 * @module
 */
import { formatIPv4, parseIPv4, parseIPv6 } from "./address.ts";
import {
  AddressType,
  type AuthMethod,
  AuthStatus,
  type ReplyCode,
  type Socks4ReplyCode,
  SocksVersion,
} from "./wire.ts";

/** SOCKS5 method-selection message: `05 METHOD`. */
export function encodeMethodSelection(method: AuthMethod): Uint8Array {
  return Uint8Array.of(SocksVersion.Socks5, method);
}

/** RFC 1929 status message: `01 STATUS`. */
export function encodeAuthStatus(ok: boolean): Uint8Array {
  return Uint8Array.of(SocksVersion.UserPassAuth, ok ? AuthStatus.Success : AuthStatus.Failure);
}

/** Returns the IPv4 bytes of `host` if it is IPv4 or an IPv4-mapped IPv6 address. */
function asIPv4(host: string): Uint8Array | null {
  const v4 = parseIPv4(host);
  if (v4) return v4;
  const v6 = parseIPv6(host);
  if (v6 && v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff) {
    return v6.slice(12);
  }
  return null;
}

/**
 * SOCKS5 reply with an IP address: `05 REP 00 ATYP ADDR PORT`. A host that is
 * not an IP literal (or is absent) is sent as IPv4 0.0.0.0, which is also the
 * shape every failure reply takes so clients can always parse it.
 */
export function encodeSocks5Reply(rep: ReplyCode, host = "0.0.0.0", port = 0): Uint8Array {
  const v4 = asIPv4(host);
  const v6 = v4 ? null : parseIPv6(host);
  const addr = v4 ?? v6 ?? new Uint8Array(4);
  const out = new Uint8Array(6 + addr.length);
  out[0] = SocksVersion.Socks5;
  out[1] = rep;
  out[2] = 0;
  out[3] = v6 ? AddressType.IPv6 : AddressType.IPv4;
  out.set(addr, 4);
  out[4 + addr.length] = (port >> 8) & 0xff;
  out[5 + addr.length] = port & 0xff;
  return out;
}

/** SOCKS5 reply carrying a domain name (RESOLVE_PTR): `05 00 00 03 LEN NAME PORT`. `name` is ASCII, at most 255 bytes. */
export function encodeSocks5NameReply(rep: ReplyCode, name: string, port = 0): Uint8Array {
  const out = new Uint8Array(7 + name.length);
  out[0] = SocksVersion.Socks5;
  out[1] = rep;
  out[3] = AddressType.DomainName;
  out[4] = name.length;
  for (let i = 0; i < name.length; i++) out[5 + i] = name.charCodeAt(i) & 0xff;
  out[5 + name.length] = (port >> 8) & 0xff;
  out[6 + name.length] = port & 0xff;
  return out;
}

/**
 * SOCKS4 reply: `00 CD PORT IPv4`. Only an IPv4 (or IPv4-mapped) host can be
 * carried; anything else is sent as 0.0.0.0.
 */
export function encodeSocks4Reply(cd: Socks4ReplyCode, host = "0.0.0.0", port = 0): Uint8Array {
  const addr = asIPv4(host) ?? new Uint8Array(4);
  return Uint8Array.of(SocksVersion.Socks4Reply, cd, (port >> 8) & 0xff, port & 0xff, ...addr);
}

/** True when `host` can be carried in a SOCKS4 reply (IPv4 or IPv4-mapped IPv6). */
export function fitsSocks4(host: string): boolean {
  return asIPv4(host) !== null;
}

/** Normalises an IPv4-mapped IPv6 address to dotted quad; other hosts are returned unchanged. */
export function unmapIPv4(host: string): string {
  const v4 = asIPv4(host);
  return v4 ? formatIPv4(v4) : host;
}

const HTTP_BODY = `<!DOCTYPE html>
<html><head><title>This is a SOCKS proxy, not an HTTP proxy</title></head>
<body>
<h1>This is a SOCKS proxy, not an HTTP proxy</h1>
<p>You sent an HTTP request to edgesocks, a SOCKS4/SOCKS5 proxy.</p>
<p>To use it from a browser, set it as a <b>SOCKS</b> host (SOCKS v5, with
"proxy DNS when using SOCKS v5" turned on) instead of an HTTP or HTTPS proxy.
From the command line: <code>curl --socks5-hostname HOST:PORT https://example.org/</code>.</p>
</body></html>
`;

/** The short `HTTP/1.0 501` page sent to clients that speak HTTP to the SOCKS port. */
export const HTTP_RESISTANCE_RESPONSE: Uint8Array = (() => {
  const text = "HTTP/1.0 501 SOCKS proxy, not an HTTP proxy\r\n" +
    "Content-Type: text/html; charset=us-ascii\r\n" +
    `Content-Length: ${HTTP_BODY.length}\r\n` +
    "Connection: close\r\n\r\n" + HTTP_BODY;
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
})();
