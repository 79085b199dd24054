/**
 * A {@linkcode Resolver} over DNS-over-HTTPS (RFC 8484): each lookup is one
 * HTTP exchange of `application/dns-message` bodies with a resolver URL,
 * through `fetch` (the runtime's, or a workerd service binding's). For
 * runtimes that cannot send DNS themselves, the edge above all.
 *
 * @module
 */
import {
  answersFor,
  base64url,
  decodeMessage,
  type DnsMessage,
  DnsRcode,
  DnsType,
  encodeQuery,
  reverseName,
} from "../core/dns_message.ts";
import { SocksError } from "../core/errors.ts";
import { ReplyCode } from "../core/wire.ts";
import type { Resolver } from "../runtime.ts";

/**
 * Options for {@linkcode dohResolver}.
 *
 * @example
 * ```ts
 * import type { DohOptions } from "@edgesocks/edgesocks";
 * const options: DohOptions = { url: "https://dns.example/dns-query", method: "POST" };
 * ```
 */
export interface DohOptions {
  /** The resolver's URL, e.g. `https://cloudflare-dns.com/dns-query`. */
  url: string;
  /** `GET` (the query in `?dns=`, base64url; the default, cacheable) or `POST` (the query as the body). */
  method?: "GET" | "POST";
  /** The `fetch` to send it with; default the global one. */
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
  /** Gives up on one exchange after this many milliseconds; default 5,000. */
  timeoutMs?: number;
}

const MEDIA_TYPE = "application/dns-message";
/** Most bytes read of a response: a DNS message over HTTP is at most 65,535 (RFC 8484 §6). */
const MAX_RESPONSE = 65_535;

function unreachable(message: string): SocksError {
  return new SocksError(ReplyCode.HostUnreachable, message);
}

/**
 * A resolver that asks `options.url` over DNS-over-HTTPS. A name that does
 * not exist (NXDOMAIN) or has no address, and an address without a PTR
 * record, reject with a `SocksError` of 0x04 (host unreachable); a resolver
 * that fails (SERVFAIL, an HTTP error, a malformed answer, a timeout) with
 * 0x01. CNAME chains in the answer are followed.
 *
 * @example
 * ```ts
 * import { dohResolver } from "@edgesocks/edgesocks";
 * const resolver = dohResolver({ url: "https://cloudflare-dns.com/dns-query" });
 * const addresses = await resolver.lookup("example.org"); // IPv4 first, then IPv6
 * ```
 */
export function dohResolver(options: DohOptions): Resolver {
  const send = options.fetch ?? ((url: string, init: RequestInit) => fetch(url, init));
  const method = options.method ?? "GET";
  const timeoutMs = options.timeoutMs ?? 5_000;

  async function exchange(name: string, type: DnsType): Promise<DnsMessage> {
    let query: Uint8Array<ArrayBuffer>;
    try {
      query = encodeQuery(name, type);
    } catch (error) {
      throw new SocksError(ReplyCode.HostUnreachable, (error as Error).message, { cause: error });
    }
    const signal = AbortSignal.timeout(timeoutMs);
    const url = method === "GET"
      ? `${options.url}${options.url.includes("?") ? "&" : "?"}dns=${base64url(query)}`
      : options.url;
    const init: RequestInit = method === "GET"
      ? { method, headers: { accept: MEDIA_TYPE }, signal }
      : { method, headers: { accept: MEDIA_TYPE, "content-type": MEDIA_TYPE }, body: query, signal };
    let body: Uint8Array;
    try {
      const response = await send(url, init);
      const type = response.headers.get("content-type") ?? "";
      if (!response.ok || !type.toLowerCase().startsWith(MEDIA_TYPE)) {
        await response.body?.cancel().catch(() => {});
        throw new Error(`DoH server answered ${response.status} (${type || "no content-type"})`);
      }
      body = new Uint8Array(await response.arrayBuffer());
      if (body.length > MAX_RESPONSE) throw new Error(`DoH answer of ${body.length} bytes`);
    } catch (error) {
      throw new SocksError(
        ReplyCode.GeneralFailure,
        `DNS-over-HTTPS query for ${name} failed: ${(error as Error)?.message ?? error}`,
        { cause: error },
      );
    }
    let message: DnsMessage;
    try {
      message = decodeMessage(body);
    } catch (error) {
      throw new SocksError(ReplyCode.GeneralFailure, `DoH answer for ${name}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (!message.response || message.id !== 0) {
      throw new SocksError(ReplyCode.GeneralFailure, `DoH answer for ${name} is not a response to its query`);
    }
    if (message.rcode === DnsRcode.NameError) throw unreachable(`${name}: no such name (NXDOMAIN)`);
    if (message.rcode !== DnsRcode.NoError) {
      throw new SocksError(ReplyCode.GeneralFailure, `DoH answer for ${name}: rcode ${message.rcode}`);
    }
    return message;
  }

  return {
    async lookup(name) {
      const [v4, v6] = await Promise.allSettled([exchange(name, DnsType.A), exchange(name, DnsType.AAAA)]);
      if (v4.status === "rejected" && v6.status === "rejected") throw v4.reason;
      const addresses = [
        ...(v4.status === "fulfilled" ? answersFor(v4.value, name, DnsType.A) : []),
        ...(v6.status === "fulfilled" ? answersFor(v6.value, name, DnsType.AAAA) : []),
      ];
      if (addresses.length === 0) throw unreachable(`${name} has no address`);
      return addresses;
    },
    async reverse(ip) {
      const ptr = reverseName(ip);
      if (ptr === null) throw unreachable(`${ip} is not an address`);
      const names = answersFor(await exchange(ptr, DnsType.PTR), ptr, DnsType.PTR);
      if (names.length === 0) throw unreachable(`${ip} has no PTR record`);
      return names;
    },
  };
}
