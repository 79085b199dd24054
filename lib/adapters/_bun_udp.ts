/**
 * UDP ASSOCIATE's relay socket on Bun, through `Bun.udpSocket`. Measured:
 * its `send()` throws synchronously when the destination is a name, of the
 * other family, or the datagram is too large (EMSGSIZE), and returns false
 * when the kernel would block; its error handler gets one argument.
 *
 * @module
 */
import type { UdpBindOptions, UdpSocket } from "../runtime.ts";
import { parseIPv4 } from "../core/address.ts";
import { unmapIPv4 } from "../core/replies.ts";

interface BunUdpSocket {
  readonly address: { address: string; port: number };
  send(data: Uint8Array, port: number, address: string): boolean;
  close(): void;
}

interface BunUdpApi {
  udpSocket(options: {
    hostname: string;
    port: number;
    socket: {
      data(socket: BunUdpSocket, data: Uint8Array, port: number, address: string): void;
      error?(error: Error): void;
    };
  }): Promise<BunUdpSocket>;
}

/** Binds a `Bun.udpSocket` as a {@linkcode UdpSocket}. */
export async function bunUdp(options: UdpBindOptions): Promise<UdpSocket> {
  const host = unmapIPv4(options.host);
  const v6 = parseIPv4(host) === null;
  let closed = false;
  const socket = await (globalThis as unknown as { Bun: BunUdpApi }).Bun.udpSocket({
    hostname: host,
    port: options.port,
    socket: {
      data(_socket, data, port, address) {
        // Copied: the buffer is not promised to outlive the callback.
        if (!closed) options.onDatagram(data.slice(), { host: unmapIPv4(address), port });
      },
      error() {},
    },
  });
  return {
    address: { host: unmapIPv4(socket.address.address), port: socket.address.port },
    pending: 0,
    send(data, to, port) {
      if (closed) return false;
      const plain = unmapIPv4(to);
      const destination = v6 && parseIPv4(plain) ? `::ffff:${plain}` : plain;
      try {
        return socket.send(data, port, destination);
      } catch {
        return false;
      }
    },
    close() {
      if (closed) return;
      closed = true;
      socket.close();
    },
  };
}
