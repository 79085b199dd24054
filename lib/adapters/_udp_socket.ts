/**
 * The part of a relay {@linkcode UdpSocket} that Deno's and Node's share
 * around their runtime's datagram socket, both handing a send to the runtime
 * and hearing later that it is done: the destination put in the form the
 * socket's family takes (or refused), the bytes handed over and not yet sent
 * (`pending`), nothing sent once closed, and a close that closes the
 * runtime's socket once. Each adapter keeps what is its runtime's: how to
 * bind, receive, send and close.
 *
 * @module
 */
import type { HostPort, UdpSocket } from "../runtime.ts";
import { parseIPv4, parseIPv6 } from "../core/address.ts";
import { unmapIPv4 } from "../core/replies.ts";

/**
 * `host` as a socket of family `v6` can send to it, or undefined when it
 * cannot: an IPv6 socket takes IPv4 as `::ffff:a.b.c.d` (Node's `udp6`
 * cannot send to `127.0.0.1` itself), an IPv4 socket reaches no IPv6, and
 * anything but an IP literal is refused.
 */
export function udpDestination(host: string, v6: boolean): string | undefined {
  const plain = unmapIPv4(host);
  if (parseIPv4(plain)) return v6 ? `::ffff:${plain}` : plain;
  if (parseIPv6(plain)) return v6 ? plain : undefined;
  return undefined;
}

/** A runtime's bound datagram socket, as {@linkcode udpRelaySocket} drives it. */
export interface RuntimeDatagramSocket {
  /**
   * Hands `data` to the runtime for `host` (an IP literal of the socket's
   * family) and `port`, calling `done` once when the runtime is done with it,
   * sent or failed. May throw, and then does not call `done`.
   */
  send(data: Uint8Array, host: string, port: number, done: () => void): void;
  /** Closes the socket; may throw when it already is. */
  close(): void;
}

/**
 * `socket`, bound at `address`, of family `v6`, as a {@linkcode UdpSocket}
 * (its address told as IPv4 where it is a mapped one); `closed` tells the
 * adapter's receive side to deliver nothing more.
 */
export function udpRelaySocket(
  socket: RuntimeDatagramSocket,
  address: HostPort,
  v6: boolean,
): UdpSocket & { readonly closed: boolean } {
  let pending = 0;
  let closed = false;
  return {
    address: { host: unmapIPv4(address.host), port: address.port },
    get pending() {
      return pending;
    },
    get closed() {
      return closed;
    },
    send(data, to, port) {
      const destination = udpDestination(to, v6);
      if (closed || destination === undefined) return false;
      pending += data.length;
      try {
        socket.send(data, destination, port, () => void (pending -= data.length));
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
  };
}
