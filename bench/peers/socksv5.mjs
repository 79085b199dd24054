// socksv5 accepting every CONNECT with no authentication, its README's first example:
// `node bench/peers/socksv5.mjs HOST:PORT`. Prints the same startup line as edgesocks.
import { createRequire } from "node:module";
const socks = createRequire(import.meta.url)("socksv5");
const [host, port] = (process.argv[2] ?? "127.0.0.1:0").split(/:(?=\d+$)/);
const server = socks.createServer((_info, accept) => accept());
server.useAuth(socks.auth.None());
server.listen(Number(port), host, () => {
  const a = server.address();
  console.log(`listening on ${a.address}:${a.port}`);
});
