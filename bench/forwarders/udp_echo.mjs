// The UDP target of the UDP bench: echoes every datagram to its sender. `node udp_echo.mjs` prints
// `listening on 127.0.0.1:PORT`.
import { createSocket } from "node:dgram";

const socket = createSocket("udp4");
socket.on("message", (data, from) => socket.send(data, from.port, from.address));
socket.bind(0, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${socket.address().port}`));
