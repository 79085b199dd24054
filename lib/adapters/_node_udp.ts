/**
 * UDP ASSOCIATE's relay socket on Node, through `node:dgram`. A `udp6`
 * socket cannot send to `127.0.0.1` (it needs `::ffff:127.0.0.1`), and a
 * `udp4` socket cannot reach IPv6 at all: the destination is put in the
 * form the socket's family takes, or refused.
 *
 * @module
 */
import { createSocket } from "node:dgram";
import type { Buffer } from "node:buffer";
import type { UdpBindOptions, UdpSocket } from "../runtime.ts";
import { parseIPv4, parseIPv6 } from "../core/address.ts";
import { unmapIPv4 } from "../core/replies.ts";

/** `host` as a socket of family `v6` can send to it, or undefined when it cannot. */
export function udpDestination(host: string, v6: boolean): string | undefined {
  const plain = unmapIPv4(host);
  if (parseIPv4(plain)) return v6 ? `::ffff:${plain}` : plain;
  if (parseIPv6(plain)) return v6 ? plain : undefined;
  return undefined;
}

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
      let pending = 0;
      let closed = false;
      const sent = (size: number) => () => void (pending -= size);
      socket.on("message", (data: Buffer, from: { address: string; port: number }) => {
        if (!closed) options.onDatagram(data, { host: unmapIPv4(from.address), port: from.port });
      });
      const bound = socket.address();
      resolve({
        address: { host: unmapIPv4(bound.address), port: bound.port },
        get pending() {
          return pending;
        },
        send(data, to, port) {
          const destination = udpDestination(to, v6);
          if (closed || destination === undefined) return false;
          try {
            pending += data.length;
            socket.send(data, port, destination, sent(data.length));
            return true;
          } catch {
            pending -= data.length;
            return false;
          }
        },
        close() {
          if (closed) return;
          closed = true;
          try {
            socket.close();
          } catch { /* already closed */ }
        },
      });
    });
  });
}
