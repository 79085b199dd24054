// A bare TCP forwarder on Node: the ceiling for edgesocks' Node relay.
// `node node_forward.mjs 127.0.0.1:0 127.0.0.1:PORT[,PORT...]` forwards every connection to the target
// ports in turn. `socket.pipe()` both ways (backpressure through write() and 'drain'), half-open sockets
// on both ends so that a FIN is passed on as a FIN, an error on either side destroys both.
//
// `node node_forward.mjs 127.0.0.1:0 socks5 [reuse]` is the least SOCKS5 server Node can run, the floor
// for any SOCKS5 server's tunnels/s on it: the client's first read is taken for its greeting and
// answered "no authentication", its second for a CONNECT to an IPv4 address (nothing is checked), then
// it answers success with a zero address and forwards as above. `reuse` listens with SO_REUSEPORT, so
// that several copies can share one port.
import net from "node:net";

const [listen = "127.0.0.1:0", targets = "", reuse] = process.argv.slice(2);
const split = (hostPort) => {
  const i = hostPort.lastIndexOf(":");
  return [hostPort.slice(0, i), Number(hostPort.slice(i + 1))];
};
const [listenHost, listenPort] = split(listen);
const socks5 = targets === "socks5";
const [targetHost, ports] = socks5 ? [] : split(targets.replace(/,.*/, ""));
const targetPorts = socks5 ? [] : [ports, ...targets.split(",").slice(1).map(Number)];
let next = 0;
const NO_AUTH = Buffer.from([5, 0]);
const SUCCEEDED = Buffer.from([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);

function forward(client, host, port, connected) {
  const upstream = net.connect({ host, port, allowHalfOpen: true, noDelay: true }, connected);
  const fail = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", fail);
  upstream.on("error", fail);
  client.pipe(upstream);
  upstream.pipe(client);
}

function handshake(client) {
  client.on("error", () => client.destroy());
  let greeted = false;
  const onData = (d) => {
    if (!greeted) {
      greeted = true;
      client.write(NO_AUTH);
      return;
    }
    client.removeListener("data", onData);
    client.pause();
    forward(client, `${d[4]}.${d[5]}.${d[6]}.${d[7]}`, d.readUInt16BE(8), () => client.write(SUCCEEDED));
  };
  client.on("data", onData);
}

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
  if (socks5) handshake(client);
  else forward(client, targetHost, targetPorts[next++ % targetPorts.length]);
});
server.listen({ port: listenPort, host: listenHost, reusePort: reuse === "reuse" }, () => {
  console.log(
    `node ${
      socks5 ? "least SOCKS5 server" : "forwarder"
    } listening on ${listenHost}:${server.address().port}`,
  );
});
