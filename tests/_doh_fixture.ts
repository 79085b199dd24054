/**
 * A DNS-over-HTTPS server (RFC 8484) on 127.0.0.1 for the tests, with fixed
 * records, written apart from lib/core/dns_message.ts (its own query parser
 * and answer encoder, with name compression as real servers use) so that
 * the codec is not tested against itself. GET `?dns=` and POST both work.
 */
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";

/** Answers by (name, type): A=1, CNAME=5, PTR=12, AAAA=28. */
const RECORDS: Record<string, { type: number; value: string }[]> = {
  "web.test": [{ type: 1, value: "127.0.0.1" }],
  "web6.test": [{ type: 28, value: "::1" }],
  "dual.test": [{ type: 1, value: "127.0.0.3" }, { type: 28, value: "::1" }],
  "alias.test": [{ type: 5, value: "mid.test" }],
  "mid.test": [{ type: 5, value: "web.test" }],
  "loop.test": [{ type: 5, value: "loop2.test" }],
  "loop2.test": [{ type: 5, value: "loop.test" }],
  "noaddr.test": [],
  "55.2.0.192.in-addr.arpa": [{ type: 12, value: "ptr.test" }],
  [`5.5.${"0.".repeat(22)}8.b.d.0.1.0.0.2.ip6.arpa`]: [{ type: 12, value: "ptr6.test" }],
};

/** The fixture's names and what RESOLVE / RESOLVE_PTR answer for them. */
export const DOH_ANSWERS = {
  "web.test": "127.0.0.1",
  "web6.test": "::1",
  "dual.test": "127.0.0.3",
  "alias.test": "127.0.0.1",
  "192.0.2.55": "ptr.test",
  "2001:db8::55": "ptr6.test",
} as const;

function encodeName(name: string): number[] {
  const out: number[] = [];
  for (const label of name.split(".")) out.push(label.length, ...[...label].map((c) => c.charCodeAt(0)));
  out.push(0);
  return out;
}

function rdata(type: number, value: string): number[] {
  if (type === 1) return value.split(".").map(Number);
  if (type === 28) {
    const [head, tail] = value.split("::");
    const h = head ? head.split(":") : [], t = tail ? tail.split(":") : [];
    const groups = [...h, ...Array(8 - h.length - t.length).fill("0"), ...t].map((g) => parseInt(g, 16));
    return groups.flatMap((g) => [g >> 8, g & 0xff]);
  }
  return encodeName(value);
}

const u16 = (n: number) => [n >> 8, n & 0xff];

/** The response to `query`: the question echoed, then the chain of answers from the asked name. */
function answer(query: Uint8Array): Uint8Array {
  let at = 12;
  const labels: string[] = [];
  while (query[at] !== 0) {
    labels.push(String.fromCharCode(...query.subarray(at + 1, at + 1 + query[at])));
    at += 1 + query[at];
  }
  const name = labels.join(".").toLowerCase();
  const type = (query[at + 1] << 8) | query[at + 2];
  const question = [...query.subarray(12, at + 5)];
  const records: number[][] = [];
  let rcode = 0;
  if (name === "fail.test") rcode = 2;
  else if (!(name in RECORDS)) rcode = 3;
  else {
    // Follow CNAMEs as a recursive resolver does, the first owner name compressed to the question (0xc00c).
    let owner = name, first = true;
    for (let hops = 0; hops < 8; hops++) {
      const rs = RECORDS[owner] ?? [];
      const matching = rs.filter((r) => r.type === type);
      const cname = rs.find((r) => r.type === 5);
      const ownerBytes = first ? [0xc0, 0x0c] : encodeName(owner);
      for (const r of matching.length ? matching : cname ? [cname] : []) {
        const data = rdata(r.type, r.value);
        records.push([...ownerBytes, ...u16(r.type), 0, 1, 0, 0, 0x0e, 0x10, ...u16(data.length), ...data]);
      }
      if (matching.length || !cname) break;
      owner = cname.value;
      first = false;
    }
  }
  const header = [query[0], query[1], 0x81, 0x80 | rcode, 0, 1, ...u16(records.length), 0, 0, 0, 0];
  return Uint8Array.from([...header, ...question, ...records.flat()]);
}

function fromBase64url(text: string): Uint8Array {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
}

function body(req: IncomingMessage): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const parts: Uint8Array[] = [];
    req.on("data", (c: Uint8Array) => parts.push(c));
    req.on("end", () => resolve(new Uint8Array(Buffer.concat(parts))));
    req.on("error", reject);
  });
}

/** A running fixture: its URL, and the requests it answered (method and queried name). */
export interface DohFixture {
  url: string;
  port: number;
  requests: { method: string; name: string; type: number }[];
  close(): Promise<void>;
}

/** Starts the DoH fixture on 127.0.0.1 (a free port), path `/dns-query`. */
export async function startDoh(): Promise<DohFixture> {
  const requests: DohFixture["requests"] = [];
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    let query: Uint8Array | undefined;
    if (url.pathname === "/dns-query" && req.method === "GET" && url.searchParams.has("dns")) {
      query = fromBase64url(url.searchParams.get("dns")!);
    } else if (
      url.pathname === "/dns-query" && req.method === "POST" &&
      req.headers["content-type"] === "application/dns-message"
    ) query = await body(req);
    if (!query || query.length < 17) {
      res.writeHead(400).end();
      return;
    }
    const reply = answer(query);
    const labels: string[] = [];
    for (let at = 12; query[at] !== 0; at += 1 + query[at]) {
      labels.push(String.fromCharCode(...query.subarray(at + 1, at + 1 + query[at])));
    }
    requests.push({
      method: req.method!,
      name: labels.join("."),
      type: (query[query.length - 4] << 8) | query[query.length - 3],
    });
    res.writeHead(200, { "content-type": "application/dns-message", "content-length": String(reply.length) });
    res.end(reply);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/dns-query`,
    port,
    requests,
    close: () =>
      new Promise((resolve) => {
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        const timer = setTimeout(resolve, 1_000);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
