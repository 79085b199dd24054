/**
 * Destination policy as data, checked by pure functions on the address
 * actually dialled (after name resolution).
 *
 * @module
 */
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from "./core/address.ts";
import { inBlock, nonGlobalRange } from "./core/special_addresses.ts";
import type { RequestKind } from "./core/request.ts";
import { ReplyCode } from "./core/wire.ts";

/**
 * An address range in CIDR form, parsed.
 *
 * @example
 * ```ts
 * import { type Cidr, parseCidr } from "@edgesocks/edgesocks";
 * const office: Cidr = parseCidr("198.51.100.0/24"); // { bytes: [198, 51, 100, 0], prefix: 24, text }
 * ```
 */
export interface Cidr {
  /** 4 or 16 bytes. */
  bytes: Uint8Array;
  /** Prefix length in bits. */
  prefix: number;
  /** The text it was parsed from. */
  text: string;
}

/**
 * Parses `a.b.c.d/n` or `v6::/n` (a bare address is a /32 or /128); throws on bad input.
 *
 * @example
 * ```ts
 * import { parseCidr } from "@edgesocks/edgesocks";
 * parseCidr("10.0.0.0/8").prefix; // 8
 * parseCidr("2001:db8::1").prefix; // 128
 * parseCidr("10.0.0.0/33"); // throws a TypeError
 * ```
 */
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
  return inBlock(ip, range.bytes, range.prefix);
}

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

/**
 * True when `ip` is not globally reachable by IANA's special-purpose address
 * registries (loopback, private, link-local, CGNAT, documentation,
 * benchmarking, multicast, reserved, unspecified, ...; see
 * `core/special_addresses.ts`), judging embedded IPv4 addresses (mapped,
 * NAT64, 6to4, Teredo) too. Anything that is not an IP literal counts as not
 * public.
 *
 * @example
 * ```ts
 * import { isNonPublicAddress } from "@edgesocks/edgesocks";
 * isNonPublicAddress("192.168.1.1"); // true
 * isNonPublicAddress("::ffff:10.0.0.1"); // true: IPv4-mapped, judged as 10.0.0.1
 * isNonPublicAddress("2002:7f00:1::1"); // true: 6to4 of 127.0.0.1
 * isNonPublicAddress("93.184.216.34"); // false
 * ```
 */
export function isNonPublicAddress(ip: string): boolean {
  const bytes = parseIPv4(ip) ?? parseIPv6(ip);
  if (!bytes) return true; // not an IP literal: never dial it unchecked
  return nonGlobalRange(bytes) !== null;
}

/**
 * The command groups a destination rule can name: RESOLVE covers RESOLVE_PTR too; `bind` is the
 * peer a BIND accepts; `udp` is each datagram a UDP association sends.
 *
 * @example
 * ```ts
 * import type { RuleCommand } from "@edgesocks/edgesocks";
 * const lookups: RuleCommand[] = ["resolve"]; // RESOLVE and RESOLVE_PTR
 * ```
 */
export type RuleCommand = "connect" | "connect_dir" | "resolve" | "bind" | "udp";

/**
 * One allow/deny rule. A rule matches when every field it sets matches; the
 * first matching rule decides; when none matches, the defaults apply.
 *
 * @example
 * ```ts
 * import { type DestinationPolicy, type DestinationRule, parseRule } from "@edgesocks/edgesocks";
 * const rules: DestinationRule[] = [parseRule("allow", "connect@10.0.0.0/8:443"), parseRule("deny", "*")];
 * const policy: DestinationPolicy = { allowPrivate: false, allowConnectDir: true, rules }; // 10/8 HTTPS only
 * ```
 */
export interface DestinationRule {
  /** What a match does. */
  action: "allow" | "deny";
  /** The commands the rule applies to. */
  commands: readonly RuleCommand[];
  /** Range the address (dialled, or answered by RESOLVE, or asked by RESOLVE_PTR) must be in. */
  cidr?: Cidr;
  /** Host name pattern for the name the client asked for: `name`, `*.suffix` (subdomains), or `*`. */
  host?: string;
  /** Inclusive port range. */
  ports?: readonly [number, number];
  /** The rule as written, for logs. */
  text: string;
}

const ALL_COMMANDS: readonly RuleCommand[] = ["connect", "connect_dir", "resolve", "bind", "udp"];

/**
 * Parses a rule: `[COMMANDS@]TARGET[:PORTS]`, where COMMANDS is a comma list
 * of `connect`, `connect_dir`, `resolve`, `bind`, `udp` (each datagram of a UDP ASSOCIATE); TARGET is an address or CIDR
 * (IPv6 in brackets when a port follows), a host pattern (`example.com`,
 * `*.example.com`) or `*`; PORTS is `N` or `N-M`. Throws a TypeError on bad input.
 *
 * @example
 * ```ts
 * import { parseRule } from "@edgesocks/edgesocks";
 * parseRule("deny", "169.254.0.0/16");
 * parseRule("allow", "connect@10.0.0.0/8:443");
 * parseRule("deny", "resolve@*.internal.example");
 * ```
 */
export function parseRule(action: "allow" | "deny", text: string): DestinationRule {
  const bad = (why: string) => new TypeError(`invalid rule ${JSON.stringify(text)}: ${why}`);
  let rest = text;
  let commands = ALL_COMMANDS;
  const at = rest.indexOf("@");
  if (at >= 0) {
    const names = rest.slice(0, at).split(",");
    if (names.some((c) => !ALL_COMMANDS.includes(c as RuleCommand))) {
      throw bad("commands are connect, connect_dir, resolve, bind, udp");
    }
    commands = names as RuleCommand[];
    rest = rest.slice(at + 1);
  }
  let target: string;
  let portText: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(.+))?$/.exec(rest);
  if (bracket) [target, portText] = [bracket[1], bracket[2]];
  else if (parseIPv6(rest.split("/")[0])) target = rest;
  else {
    const colon = rest.lastIndexOf(":");
    [target, portText] = colon < 0 ? [rest, undefined] : [rest.slice(0, colon), rest.slice(colon + 1)];
  }
  const rule: DestinationRule = { action, commands, text };
  if (portText !== undefined) {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(portText);
    const lo = m ? Number(m[1]) : -1, hi = m ? Number(m[2] ?? m[1]) : -1;
    if (!m || lo > hi || hi > 65535) throw bad("ports are N or N-M, 0-65535");
    rule.ports = [lo, hi];
  }
  if (target === "*") return rule;
  if (parseIPv4(target.split("/")[0]) || parseIPv6(target.split("/")[0])) {
    try {
      rule.cidr = parseCidr(target);
    } catch {
      throw bad("bad address range");
    }
    return rule;
  }
  const host = target.toLowerCase().replace(/\.$/, "");
  if (!/^(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(host)) {
    throw bad("expected an address, a CIDR range, a host name or *");
  }
  rule.host = host;
  return rule;
}

function hostMatches(pattern: string, name: string | undefined): boolean {
  if (name === undefined) return false;
  const n = name.toLowerCase().replace(/\.$/, "");
  return pattern.startsWith("*.") ? n.endsWith(pattern.slice(1)) : n === pattern;
}

/**
 * What a destination check looks at.
 *
 * @example
 * ```ts
 * import { DEFAULT_POLICY, type DestinationQuery, evaluateDestination } from "@edgesocks/edgesocks";
 * const query: DestinationQuery = { command: "connect", name: "example.org", port: 443 }; // before DNS
 * evaluateDestination(query, DEFAULT_POLICY); // "undecided": the addresses are checked after the lookup
 * ```
 */
export interface DestinationQuery {
  /** The command, grouped as rules name it. */
  command: RuleCommand;
  /** The name the client asked for, when it asked by name. */
  name?: string;
  /** The address to be dialled (or answered, or reverse-resolved); absent before name resolution. */
  ip?: string;
  /** The destination port (0 for RESOLVE). */
  port: number;
}

/** Maps a request kind to the command group rules name (RESOLVE covers RESOLVE_PTR). */
export function ruleCommand(kind: Exclude<RequestKind, "bind" | "udp_associate">): RuleCommand {
  return kind === "resolve_ptr" ? "resolve" : kind;
}

/**
 * Evaluates the rules, then the defaults (non-public addresses refused unless
 * `allowPrivate`). Returns the reply code to refuse with, or null when
 * allowed. Without `ip` (before name resolution) it refuses only what a
 * name rule denies outright, and otherwise lets the lookup go ahead (the
 * addresses are checked after it); an undecided answer is `"undecided"`.
 *
 * @example
 * ```ts
 * import { DEFAULT_POLICY, evaluateDestination } from "@edgesocks/edgesocks";
 * evaluateDestination({ command: "connect", ip: "10.0.0.1", port: 80 }, DEFAULT_POLICY); // 0x02
 * ```
 */
export function evaluateDestination(
  query: DestinationQuery,
  policy: DestinationPolicy,
): ReplyCode | null | "undecided" {
  for (const rule of policy.rules ?? []) {
    if (!rule.commands.includes(query.command)) continue;
    if (rule.ports && (query.port < rule.ports[0] || query.port > rule.ports[1])) continue;
    if (rule.host !== undefined && !hostMatches(rule.host, query.name)) continue;
    if (rule.cidr) {
      if (query.ip === undefined) return "undecided";
      const bytes = effectiveAddress(query.ip);
      if (!bytes || !inCidr(bytes, rule.cidr)) continue;
    }
    if (rule.action === "deny") return ReplyCode.NotAllowed;
    return query.ip === undefined || effectiveAddress(query.ip) ? null : ReplyCode.NotAllowed;
  }
  if (query.ip === undefined) return "undecided";
  return checkDestination(query.ip, policy);
}

/**
 * Which destinations the server may dial. Plain data, built from flags.
 *
 * @example
 * ```ts
 * import { type DestinationPolicy, parseRule } from "@edgesocks/edgesocks";
 * const policy: DestinationPolicy = {
 *   allowPrivate: false,
 *   allowConnectDir: false,
 *   rules: [parseRule("deny", "*:25")], // no SMTP
 * };
 * ```
 */
export interface DestinationPolicy {
  /**
   * Allow destinations that are not globally reachable (loopback, private, link-local, documentation, ...:
   * see {@linkcode isNonPublicAddress}). Default false.
   */
  allowPrivate: boolean;
  /** Serve Tor's CONNECT_DIR (0xF2) as a tunnel. Default true. */
  allowConnectDir: boolean;
  /**
   * The proxy host's own addresses (its interfaces' and those it listens on),
   * refused unless `allowPrivate` or an allow rule says otherwise: a public
   * address of the host reaches every service bound to 0.0.0.0 there, the
   * proxy itself included. `serve()` fills it from the runtime's interface
   * list; build it with {@linkcode hostAddressSet}.
   */
  hostAddresses?: ReadonlySet<string>;
  /** Allow/deny rules, first match wins, checked before the defaults. */
  rules?: readonly DestinationRule[];
}

/**
 * Which clients may use the server: first matching rule wins; with any allow rule, unmatched clients are refused.
 *
 * @example
 * ```ts
 * import { type ClientPolicy, parseCidr } from "@edgesocks/edgesocks";
 * const lanOnly: ClientPolicy = { rules: [{ action: "allow", cidr: parseCidr("192.168.0.0/16") }] };
 * ```
 */
export interface ClientPolicy {
  /** Rules in order. */
  rules: readonly { action: "allow" | "deny"; cidr: Cidr }[];
}

/**
 * True when a client at `ip` may connect.
 *
 * @example
 * ```ts
 * import { clientAllowed, parseCidr } from "@edgesocks/edgesocks";
 * clientAllowed("10.1.2.3", { rules: [{ action: "allow", cidr: parseCidr("10.0.0.0/8") }] }); // true
 * ```
 */
export function clientAllowed(ip: string | undefined, policy: ClientPolicy): boolean {
  if (policy.rules.length === 0) return true;
  const bytes = ip === undefined ? null : effectiveAddress(ip);
  for (const rule of policy.rules) {
    if (bytes && inCidr(bytes, rule.cidr)) return rule.action === "allow";
  }
  return !policy.rules.some((r) => r.action === "allow");
}

/**
 * The safe default: public destinations only, CONNECT_DIR allowed.
 *
 * @example
 * ```ts
 * import { DEFAULT_POLICY, type DestinationPolicy } from "@edgesocks/edgesocks";
 * const lab: DestinationPolicy = { ...DEFAULT_POLICY, allowPrivate: true }; // may reach private networks
 * ```
 */
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
 * import { checkDestination, DEFAULT_POLICY } from "@edgesocks/edgesocks";
 * checkDestination("::ffff:127.0.0.1", DEFAULT_POLICY); // ReplyCode.NotAllowed (0x02)
 * checkDestination("93.184.216.34", DEFAULT_POLICY); // null
 * ```
 */
export function checkDestination(ip: string, policy: DestinationPolicy): ReplyCode | null {
  const bytes = effectiveAddress(ip);
  if (bytes === null) return ReplyCode.NotAllowed;
  if (policy.allowPrivate) return null;
  if (isNonPublicAddress(ip)) return ReplyCode.NotAllowed;
  if (policy.hostAddresses?.has(bytes.length === 4 ? formatIPv4(bytes) : formatIPv6(bytes))) {
    return ReplyCode.NotAllowed;
  }
  return null;
}

/**
 * The set {@linkcode DestinationPolicy.hostAddresses} wants: each address in
 * canonical text, IPv4-mapped and other embedded forms reduced to IPv4, so a
 * destination matches in any spelling.
 *
 * @example
 * ```ts
 * import { hostAddressSet } from "@edgesocks/edgesocks";
 * hostAddressSet(["::ffff:203.0.113.5", "2001:DB8::1"]); // Set { "203.0.113.5", "2001:db8::1" }
 * ```
 */
export function hostAddressSet(addresses: Iterable<string>): ReadonlySet<string> {
  const out = new Set<string>();
  for (const a of addresses) {
    const bytes = effectiveAddress(a);
    if (bytes) out.add(bytes.length === 4 ? formatIPv4(bytes) : formatIPv6(bytes));
  }
  return out;
}
