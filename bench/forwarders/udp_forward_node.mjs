// A bare UDP forwarder on Node (node:dgram): the ceiling for edgesocks' UDP relay on Node.
// `node udp_forward_node.mjs 127.0.0.1:TARGET_PORT` listens on 127.0.0.1 (a free port, printed as
// `listening on 127.0.0.1:PORT`), sends every datagram to the target from a second socket, and every
// answer back to the last client. No header, no policy: one socket each way, as a relay has.
import { createSocket } from "node:dgram";

const [, port] = process.argv[2].split(":");
const front = createSocket("udp4");
const back = createSocket("udp4");
let client = null;
front.on("message", (data, from) => {
  client = from;
  back.send(data, Number(port), "127.0.0.1");
});
back.on("message", (data) => client && front.send(data, client.port, client.address));
back.bind(
  0,
  "127.0.0.1",
  () => front.bind(0, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${front.address().port}`)),
);
