// A bare TCP forwarder on Node: the ceiling for edgesocks' Node relay.
// `node node_forward.mjs 127.0.0.1:0 127.0.0.1:PORT[,PORT...]` forwards every connection to the target
// ports in turn. `socket.pipe()` both ways (backpressure through write() and 'drain'), half-open sockets
// on both ends so that a FIN is passed on as a FIN, an error on either side destroys both.
import net from "node:net";

const [listen = "127.0.0.1:0", targets = ""] = process.argv.slice(2);
const split = (hostPort) => {
  const i = hostPort.lastIndexOf(":");
  return [hostPort.slice(0, i), Number(hostPort.slice(i + 1))];
};
const [listenHost, listenPort] = split(listen);
const [targetHost, ports] = split(targets.replace(/,.*/, ""));
const targetPorts = [ports, ...targets.split(",").slice(1).map(Number)];
let next = 0;

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
  const upstream = net.connect({
    host: targetHost,
    port: targetPorts[next++ % targetPorts.length],
    allowHalfOpen: true,
    noDelay: true,
  });
  const fail = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", fail);
  upstream.on("error", fail);
  client.pipe(upstream);
  upstream.pipe(client);
});
server.listen(listenPort, listenHost, () => {
  console.log(`node forwarder listening on ${listenHost}:${server.address().port}`);
});
