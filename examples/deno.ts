// A minimal embedding on Deno; import by URL works the same way (no import map needed).
// PORT=1080 ALLOW_PRIVATE=1 deno run --allow-net --allow-env --allow-read examples/deno.ts
import { serve } from "../mod.ts";
import { denoAdapter } from "../lib/adapters/deno.ts";

const server = await serve(denoAdapter, {
  listen: [{ host: "127.0.0.1", port: Number(Deno.env.get("PORT") ?? 1080) }],
  policy: { allowPrivate: Deno.env.get("ALLOW_PRIVATE") === "1" },
  onLog: (entry) => console.log(JSON.stringify(entry)),
});
console.log(`SOCKS proxy on ${server.addresses.map((a) => `${a.host}:${a.port}`).join(", ")}`);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => server.close().then(() => Deno.exit(0)));
}
