// A minimal embedding on Bun. PORT=1080 ALLOW_PRIVATE=1 bun examples/bun.ts
import process from "node:process";
import { serve } from "../mod.ts";
import { bunAdapter } from "../lib/adapters/bun.ts";

const server = await serve(bunAdapter, {
  listen: [{ host: "127.0.0.1", port: Number(process.env.PORT ?? 1080) }],
  policy: { allowPrivate: process.env.ALLOW_PRIVATE === "1" },
  onLog: (entry) => console.log(JSON.stringify(entry)),
});
console.log(`SOCKS proxy on ${server.addresses.map((a) => `${a.host}:${a.port}`).join(", ")}`);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => server.close().then(() => process.exit(0)));
}
