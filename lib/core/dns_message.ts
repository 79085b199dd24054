/**
 * DNS messages (RFC 1035) as DNS-over-HTTPS carries them (RFC 8484,
 * `application/dns-message`): build a query, read the answers of a
 * response (A, AAAA, PTR, and the CNAME chain that leads to them), the
 * reverse-lookup name of an address. Sans-IO: bytes in, values out.
 *
 * @module
 */
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from "./address.ts";

/**
 * The record types this codec reads (RFC 1035 §3.2.2, RFC 3596 §2.1).
 *
 * @example
 * ```ts
 * import { DnsType } from "./dns_message.ts";
 * DnsType.AAAA; // 28
 * ```
 */
export const DnsType = { A: 1, CNAME: 5, PTR: 12, AAAA: 28 } as const;
/** One of {@linkcode DnsType}. */
export type DnsType = typeof DnsType[keyof typeof DnsType];

/**
 * Response codes (RFC 1035 §4.1.1) that a resolver tells apart.
 *
 * @example
 * ```ts
 * import { DnsRcode } from "./dns_message.ts";
 * DnsRcode.NameError; // 3, NXDOMAIN
 * ```
 */
export const DnsRcode = { NoError: 0, FormatError: 1, ServerFailure: 2, NameError: 3, Refused: 5 } as const;

/** Header size (RFC 1035 §4.1.1). */
const HEADER = 12;
/** Most compression pointers followed in one name: more means a loop. */
const MAX_POINTERS = 64;
/** Most CNAME records followed from the asked name. */
const MAX_CNAME_CHAIN = 16;

/**
 * A malformed DNS message or a name that cannot be asked.
 *
 * @example
 * ```ts
 * import { decodeMessage, DnsMessageError } from "./dns_message.ts";
 * try { decodeMessage(new Uint8Array(3)); } catch (e) { e instanceof DnsMessageError; } // true
 * ```
 */
export class DnsMessageError extends TypeError {
  /** Builds it. */
  constructor(message: string) {
    super(message);
    this.name = "DnsMessageError";
  }
}

/**
 * One resource record of the answer section. `value` is the address (A,
 * AAAA) or the name (CNAME, PTR) it carries; undefined for other types.
 *
 * @example
 * ```ts
 * import type { DnsRecord } from "./dns_message.ts";
 * const r: DnsRecord = { name: "example.test", type: 1, ttl: 300, value: "192.0.2.1" };
 * ```
 */
export interface DnsRecord {
  /** Owner name, lower case, without the final dot. */
  name: string;
  /** Record type. */
  type: number;
  /** Time to live, in seconds. */
  ttl: number;
  /** The address or name it carries (A, AAAA, CNAME, PTR). */
  value?: string;
}

/**
 * A decoded response.
 *
 * @example
 * ```ts
 * import type { DnsMessage } from "./dns_message.ts";
 * const nx = (m: DnsMessage) => m.rcode === 3;
 * ```
 */
export interface DnsMessage {
  /** Message ID. */
  id: number;
  /** True for a response (QR). */
  response: boolean;
  /** Truncated (TC). */
  truncated: boolean;
  /** Response code (the header's 4 bits). */
  rcode: number;
  /** The question's name and type, when the message has one. */
  question?: { name: string; type: number };
  /** The answer section. */
  answers: DnsRecord[];
}

const encoder = new TextEncoder();

/** The wire form of a name: labels of 1–63 bytes, 255 bytes in all (RFC 1035 §2.3.4). */
function encodeName(name: string): Uint8Array {
  const trimmed = name.endsWith(".") ? name.slice(0, -1) : name;
  if (trimmed === "") return Uint8Array.of(0);
  const labels = trimmed.split(".").map((l) => encoder.encode(l));
  const size = labels.reduce((n, l) => n + 1 + l.length, 1);
  if (labels.some((l) => l.length === 0 || l.length > 63) || size > 255) {
    throw new DnsMessageError(`cannot ask for ${JSON.stringify(name)}: not a valid DNS name`);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const l of labels) {
    out[at++] = l.length;
    out.set(l, at);
    at += l.length;
  }
  return out;
}

/**
 * A query for `name`'s records of `type`, recursion desired. RFC 8484 §4.1
 * asks for ID 0 with GET, so that answers can be cached.
 *
 * @example
 * ```ts
 * import { DnsType, encodeQuery } from "./dns_message.ts";
 * encodeQuery("a.test", DnsType.A); // 00 00 01 00 00 01 00 00 00 00 00 00 01 61 04 74 65 73 74 00 00 01 00 01
 * ```
 */
export function encodeQuery(name: string, type: DnsType, id = 0): Uint8Array<ArrayBuffer> {
  const qname = encodeName(name);
  const out = new Uint8Array(HEADER + qname.length + 4);
  const view = new DataView(out.buffer);
  view.setUint16(0, id);
  view.setUint16(2, 0x0100); // RD
  view.setUint16(4, 1); // QDCOUNT
  out.set(qname, HEADER);
  view.setUint16(HEADER + qname.length, type);
  view.setUint16(HEADER + qname.length + 2, 1); // IN
  return out;
}

/** Reads the name at `at`, following compression pointers; returns it and the offset after it. */
function readName(bytes: Uint8Array, at: number): [string, number] {
  const labels: string[] = [];
  let end = -1;
  let pointers = 0;
  let length = 0;
  for (;;) {
    if (at >= bytes.length) throw new DnsMessageError("name runs past the end of the message");
    const n = bytes[at];
    if (n === 0) {
      if (end < 0) end = at + 1;
      break;
    }
    if ((n & 0xc0) === 0xc0) {
      if (at + 1 >= bytes.length) throw new DnsMessageError("pointer runs past the end of the message");
      if (++pointers > MAX_POINTERS) throw new DnsMessageError("compression pointers loop");
      if (end < 0) end = at + 2;
      at = ((n & 0x3f) << 8) | bytes[at + 1];
      continue;
    }
    if ((n & 0xc0) !== 0) throw new DnsMessageError(`unknown label type 0x${n.toString(16)}`);
    if (at + 1 + n > bytes.length) throw new DnsMessageError("label runs past the end of the message");
    length += n + 1;
    if (length > 255) throw new DnsMessageError("name longer than 255 bytes");
    let label = "";
    for (let i = at + 1; i <= at + n; i++) label += String.fromCharCode(bytes[i]);
    labels.push(label.toLowerCase());
    at += 1 + n;
  }
  return [labels.join("."), end];
}

/**
 * Decodes a response: header, question, and the answer section (authority
 * and additional sections are not read). Throws a
 * {@linkcode DnsMessageError} on a malformed message.
 *
 * @example
 * ```ts
 * import { decodeMessage } from "./dns_message.ts";
 * declare const body: Uint8Array; // a DoH response's body
 * const { rcode, answers } = decodeMessage(body);
 * ```
 */
export function decodeMessage(bytes: Uint8Array): DnsMessage {
  if (bytes.length < HEADER) throw new DnsMessageError(`message of ${bytes.length} bytes: no header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const flags = view.getUint16(2);
  const qdcount = view.getUint16(4), ancount = view.getUint16(6);
  const message: DnsMessage = {
    id: view.getUint16(0),
    response: (flags & 0x8000) !== 0,
    truncated: (flags & 0x0200) !== 0,
    rcode: flags & 0x000f,
    answers: [],
  };
  let at = HEADER;
  for (let i = 0; i < qdcount; i++) {
    const [name, next] = readName(bytes, at);
    if (next + 4 > bytes.length) throw new DnsMessageError("question runs past the end of the message");
    if (i === 0) message.question = { name, type: view.getUint16(next) };
    at = next + 4;
  }
  for (let i = 0; i < ancount; i++) {
    const [name, next] = readName(bytes, at);
    if (next + 10 > bytes.length) throw new DnsMessageError("record runs past the end of the message");
    const type = view.getUint16(next);
    const ttl = view.getUint32(next + 4);
    const rdlength = view.getUint16(next + 8);
    const rdata = next + 10;
    if (rdata + rdlength > bytes.length) {
      throw new DnsMessageError("record data runs past the end of the message");
    }
    const record: DnsRecord = { name, type, ttl };
    if (type === DnsType.A && rdlength === 4) record.value = formatIPv4(bytes.subarray(rdata, rdata + 4));
    else if (type === DnsType.AAAA && rdlength === 16) {
      record.value = formatIPv6(bytes.subarray(rdata, rdata + 16));
    } else if (type === DnsType.CNAME || type === DnsType.PTR) {
      const [target, after] = readName(bytes, rdata);
      if (after > rdata + rdlength) throw new DnsMessageError("name runs past its record");
      record.value = target;
    } else if (type === DnsType.A || type === DnsType.AAAA) {
      throw new DnsMessageError(`address record of ${rdlength} bytes`);
    }
    message.answers.push(record);
    at = rdata + rdlength;
  }
  return message;
}

/**
 * The values of the records of `type` that answer `name`, following the
 * CNAME chain from it (at most 16 links; a loop ends it).
 *
 * @example
 * ```ts
 * import { answersFor, decodeMessage, DnsType } from "./dns_message.ts";
 * declare const body: Uint8Array;
 * answersFor(decodeMessage(body), "www.example.test", DnsType.A); // ["192.0.2.1"] via a CNAME, say
 * ```
 */
export function answersFor(message: DnsMessage, name: string, type: DnsType): string[] {
  let owner = name.toLowerCase().replace(/\.$/, "");
  const seen = new Set<string>([owner]);
  for (let links = 0; links <= MAX_CNAME_CHAIN; links++) {
    const found = message.answers.filter((r) => r.name === owner && r.type === type && r.value !== undefined)
      .map((r) => r.value!);
    if (found.length > 0) return found;
    const cname = message.answers.find((r) => r.name === owner && r.type === DnsType.CNAME);
    if (!cname?.value || seen.has(cname.value)) return [];
    owner = cname.value;
    seen.add(owner);
  }
  return [];
}

/**
 * The name a PTR query asks for `ip` (RFC 1035 §3.5, RFC 3596 §2.5); null
 * when `ip` is not an address.
 *
 * @example
 * ```ts
 * import { reverseName } from "./dns_message.ts";
 * reverseName("192.0.2.55"); // "55.2.0.192.in-addr.arpa"
 * reverseName("2001:db8::1"); // "1.0.0.0. … .8.b.d.0.1.0.0.2.ip6.arpa"
 * ```
 */
export function reverseName(ip: string): string | null {
  const v4 = parseIPv4(ip);
  if (v4) return `${[...v4].reverse().join(".")}.in-addr.arpa`;
  const v6 = parseIPv6(ip);
  if (!v6) return null;
  const nibbles: string[] = [];
  for (let i = 15; i >= 0; i--) nibbles.push((v6[i] & 0xf).toString(16), (v6[i] >> 4).toString(16));
  return `${nibbles.join(".")}.ip6.arpa`;
}

/**
 * Base64url without padding (RFC 4648 §5), as the `dns` parameter of a DoH
 * GET carries the query (RFC 8484 §4.1).
 *
 * @example
 * ```ts
 * import { base64url } from "./dns_message.ts";
 * base64url(Uint8Array.of(0xfb, 0xff)); // "-_8"
 * ```
 */
export function base64url(bytes: Uint8Array): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((bytes.length - i) * 8) / 6));
    for (let c = 0; c < chars; c++) out += alphabet[(n >> (18 - 6 * c)) & 63];
  }
  return out;
}
