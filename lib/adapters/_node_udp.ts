/**
 * UDP ASSOCIATE's relay socket on Node, through `node:dgram`. A `udp6`
 * socket cannot send to `127.0.0.1` (it needs `::ffff:127.0.0.1`), and a
 * `udp4` socket cannot reach IPv6 at all: the destination is put in the
 * form the socket's family takes, or refused (`udpDestination`, in
 * `_udp_socket.ts` with the rest of what Deno's relay socket shares).
 *
 * @module
 */
import { createSocket } from "node:dgram";
import type { Buffer } from "node:buffer";
import type { UdpBindOptions, UdpSocket } from "../runtime.ts";
import { parseIPv4 } from "../core/address.ts";
import { unmapIPv4 } from "../core/replies.ts";
import { udpRelaySocket } from "./_udp_socket.ts";

/** Binds a `node:dgram` socket as a {@linkcode UdpSocket}. */
export function nodeUdp(options: UdpBindOptions): Promise<UdpSocket> {
  const host = unmapIPv4(options.host);
  const v6 = parseIPv4(host) === null;
  const socket = createSocket({ type: v6 ? "udp6" : "udp4", ipv6Only: false });
  return new Promise((resolve, reject) => {
    const failed = (error: Error) => {
      socket.close();
      reject(error);
    };
    socket.once("error", failed);
    socket.bind(options.port, host, () => {
      socket.off("error", failed);
      // A send that fails reports here too (as well as to its callback): nothing to do but not crash.
      socket.on("error", () => {});
      const bound = socket.address();
      const relay = udpRelaySocket(
        {
          send: (data, destination, port, done) => socket.send(data, port, destination, done),
          close: () => socket.close(),
        },
        { host: bound.address, port: bound.port },
        v6,
      );
      socket.on("message", (data: Buffer, from: { address: string; port: number }) => {
        if (!relay.closed) options.onDatagram(data, { host: unmapIPv4(from.address), port: from.port });
      });
      resolve(relay);
    });
  });
}
