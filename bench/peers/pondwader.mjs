// @pondwader/socks5-server with its defaults (no auth, every destination), as a Node user would start it:
// `node bench/peers/pondwader.mjs HOST:PORT`. Prints the same startup line as edgesocks.
import { createRequire } from "node:module";
const { createServer } = createRequire(import.meta.url)("@pondwader/socks5-server");
const [host, port] = (process.argv[2] ?? "127.0.0.1:0").split(/:(?=\d+$)/);
const server = createServer();
server.listen(Number(port), host, () => {
  const a = server.server.address(); // the net.Server it wraps
  console.log(`listening on ${a.address}:${a.port}`);
});
