/**
 * DNS through `node:dns`, shared by the adapters: Node and Bun use it for
 * everything, Deno for the system resolver (its own `Deno.resolveDns` refuses
 * to work without a `nameserver` line in resolv.conf, even for /etc/hosts
 * names, while `node:dns` goes through getaddrinfo). Also the errno → reply
 * table for connect errors reported with Node-style codes.
 *
 * @module
 */
import { promises as dns } from "node:dns";
import type { HostPort, Resolver } from "../runtime.ts";
import { canonicalIP, formatHostPort, parseIPv4, parseIPv6 } from "../core/address.ts";
import { SocksError } from "../core/errors.ts";
import { unmapIPv4 } from "../core/replies.ts";
import { ReplyCode } from "../core/wire.ts";

/**
 * The in-addr.arpa / ip6.arpa name of an IP literal (IPv4-mapped counts as IPv4), or null.
 *
 * @example
 * ```ts
 * import { reverseLookupName } from "./_node_dns.ts";
 * reverseLookupName("192.0.2.1"); // "1.2.0.192.in-addr.arpa"
 * reverseLookupName("example.test"); // null
 * ```
 */
export function reverseLookupName(ip: string): string | null {
  const text = unmapIPv4(ip);
  const v4 = parseIPv4(text);
  if (v4) return `${[...v4].reverse().join(".")}.in-addr.arpa`;
  const v6 = parseIPv6(text);
  if (!v6) return null;
  const nibbles: string[] = [];
  for (let i = 15; i >= 0; i--) nibbles.push((v6[i] & 15).toString(16), (v6[i] >> 4).toString(16));
  return `${nibbles.join(".")}.ip6.arpa`;
}

/**
 * A name or address with no answer.
 *
 * @example
 * ```ts
 * import { notFound } from "./_node_dns.ts";
 * const e = notFound("example.invalid"); // HostUnreachable, "cannot resolve example.invalid"
 * ```
 */
export function notFound(what: string, cause?: unknown): SocksError {
  return new SocksError(ReplyCode.HostUnreachable, `cannot resolve ${what}`, { cause });
}

/**
 * A resolver asking `server` directly (A and AAAA in parallel, IPv4 answers first; PTR).
 *
 * @example
 * ```ts
 * import { nameServerResolver } from "./_node_dns.ts";
 * const resolver = nameServerResolver({ host: "127.0.0.1", port: 5353 });
 * const addresses = await resolver.lookup("example.test");
 * ```
 */
export function nameServerResolver(server: HostPort): Resolver {
  const resolver = new dns.Resolver({ timeout: 5_000, tries: 2 });
  resolver.setServers([formatHostPort(server)]);
  return {
    async lookup(name) {
      const [v4, v6] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]);
      const found = [v4, v6].flatMap((a) => a.status === "fulfilled" ? a.value : []);
      if (found.length > 0) return found;
      throw notFound(name, v4.status === "rejected" ? v4.reason : undefined);
    },
    async reverse(ip) {
      // resolvePtr asks the server; resolver.reverse() would answer from /etc/hosts first.
      const ptr = reverseLookupName(ip);
      if (!ptr) throw notFound(ip);
      let names: string[];
      try {
        names = (await resolver.resolvePtr(ptr)).map((n) => n.replace(/\.$/, ""));
      } catch (error) {
        throw notFound(ip, error);
      }
      if (names.length === 0) throw notFound(ip);
      return names;
    },
  };
}

/**
 * The system resolver: getaddrinfo / getnameinfo, so /etc/hosts and nsswitch apply.
 *
 * @example
 * ```ts
 * import { systemResolver } from "./_node_dns.ts";
 * const addresses = await systemResolver.lookup("localhost"); // e.g. ["127.0.0.1", "::1"]
 * ```
 */
export const systemResolver: Resolver = {
  async lookup(name) {
    let found: { address: string; family: number }[];
    try {
      found = await dns.lookup(name, { all: true });
    } catch (error) {
      throw notFound(name, error);
    }
    const byFamily = (family: number) => found.filter((f) => f.family === family).map((f) => f.address);
    const addresses = [...new Set([...byFamily(4), ...byFamily(6)])];
    if (addresses.length === 0) throw notFound(name);
    return addresses;
  },
  async reverse(ip) {
    let hostname: string;
    try {
      ({ hostname } = await dns.lookupService(unmapIPv4(ip), 0));
    } catch (error) {
      throw notFound(ip, error);
    }
    // getnameinfo answers with the address itself when there is no name.
    if (!hostname || canonicalIP(hostname) !== null) throw notFound(ip);
    return [hostname.replace(/\.$/, "")];
  },
};
