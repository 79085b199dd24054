/**
 * A fast loopback sender for tests/burst_test.ts, run as a subprocess so that
 * the load it carries is not the test's: a node:net server on 127.0.0.1:0
 * that writes `BYTES` (argv[2]) bytes to every connection the moment it is
 * accepted and then sends its FIN. Its accept queue is as deep as the kernel
 * allows (net.core.somaxconn), so that what a burst overflows is the proxy's
 * queue, not this one. Prints `burst sender on 127.0.0.1:PORT`; ends on SIGTERM.
 */
import { createServer, type Socket } from "node:net";
import process from "node:process";
import { senderPayload } from "./_burst_payload.ts";

const args = process.argv.slice(2);
const bytes = Number(args[args.length - 1]);
if (!Number.isInteger(bytes) || bytes <= 0) {
  throw new TypeError(`expected a byte count, got ${args.join(" ")}`);
}
const payload = senderPayload(bytes);
const sockets = new Set<Socket>();
const server = createServer((s) => {
  sockets.add(s);
  s.on("close", () => sockets.delete(s));
  s.on("error", () => {});
  s.end(payload);
});
server.listen({ host: "127.0.0.1", port: 0, backlog: 65535 }, () => {
  const { port } = server.address() as { port: number };
  console.log(`burst sender on 127.0.0.1:${port}`);
});
process.on("SIGTERM", () => {
  for (const s of sockets) s.destroy();
  server.close();
  process.exit(0);
});
