// Checks one way of running edgesocks end to end on loopback: starts a local echo server, then either
//   api MODULE ADAPTER_EXPORT   imports the npm package's API (e.g. "edgesocks" + "edgesocks/node")
//   cmd PROGRAM [ARGS...]       runs a CLI (the package's bin, the single binary) with --listen 127.0.0.1:0
// and passes a SOCKS5 CONNECT through it. Plain JavaScript, so Node 20 and Bun run it as it is.
import { spawn } from "node:child_process";
import net from "node:net";

const [mode, ...rest] = process.argv.slice(2);
const fail = (msg) => {
  console.error(`dist check (${mode} ${rest.join(" ")}): ${msg}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 30_000).unref();

const echo = net.createServer({ allowHalfOpen: true }, (s) => {
  // A tunnel still open when the proxy stops is cut with a reset (Node, Bun): not this check's failure.
  s.on("error", () => {});
  s.on("data", (d) => s.write(d));
  s.on("end", () => s.end());
});
await new Promise((r) => echo.listen(0, "127.0.0.1", r));
const echoPort = echo.address().port;

async function socks5RoundTrip(port) {
  const s = net.connect({ host: "127.0.0.1", port });
  await new Promise((r, j) => (s.once("connect", r), s.once("error", j)));
  s.write(Buffer.from([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, echoPort >> 8, echoPort & 255]));
  s.write("ping through edgesocks");
  let got = Buffer.alloc(0);
  await new Promise((r, j) => {
    s.on("data", (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 12 + 22) r();
    });
    s.once("error", j);
  });
  s.destroy();
  if (got.subarray(0, 4).toString("hex") !== "05000500") {
    fail(`bad replies ${got.subarray(0, 12).toString("hex")}`);
  }
  if (got.subarray(12).toString() !== "ping through edgesocks") fail(`bad echo ${got.subarray(12)}`);
}

if (mode === "api") {
  const [modName, adapterName] = rest;
  const mod = await import(modName);
  const adapters = await import(adapterName);
  const adapter = Object.values(adapters).find((v) => v && typeof v === "object" && "dial" in v);
  if (!adapter) fail(`no adapter exported by ${adapterName}`);
  const server = await mod.serve(adapter, {
    listen: [{ host: "127.0.0.1", port: 0 }],
    policy: { allowPrivate: true },
  });
  await socks5RoundTrip(server.addresses[0].port);
  await server.close();
  console.log(`ok: API ${modName} + ${adapterName} on ${adapter.name}`);
} else if (mode === "cmd") {
  const [cmd, ...args] = rest;
  const child = spawn(cmd, [...args, "--listen", "127.0.0.1:0", "--allow-private"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise((resolve) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on("exit", (code) => fail(`exited with ${code} before listening: ${out}`));
  });
  await socks5RoundTrip(port);
  child.removeAllListeners("exit");
  const code = await new Promise((r) => (child.once("exit", r), process.kill(child.pid, "SIGTERM")));
  if (code !== 0) fail(`exit code ${code} after SIGTERM`);
  console.log(`ok: ${[cmd, ...args].join(" ")} serves a SOCKS5 CONNECT and stops on SIGTERM`);
} else fail("usage: api MODULE ADAPTER | cmd PROGRAM [ARGS...]");
echo.close();
process.exit(0);
