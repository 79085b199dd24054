/**
 * UDP ASSOCIATE's relay socket on Deno, through `Deno.listenDatagram`, which
 * Deno 2.9 still keeps behind `--unstable-net` (without it the function is
 * absent, and {@linkcode denoUdpUnavailable} says so).
 *
 * Each pending `receive()` holds its buffer for as long as the socket is
 * idle, so one buffer per socket is reused from datagram to datagram and
 * each datagram is copied out of it.
 *
 * @module
 */
import type { UdpBindOptions, UdpSocket } from "../runtime.ts";
import { parseIPv4 } from "../core/address.ts";
import { unmapIPv4 } from "../core/replies.ts";

interface NetAddr {
  transport: "udp";
  hostname: string;
  port: number;
}

interface DatagramConn {
  readonly addr: NetAddr;
  receive(buffer?: Uint8Array): Promise<[Uint8Array, NetAddr]>;
  send(data: Uint8Array, to: NetAddr): Promise<number>;
  close(): void;
}

type ListenDatagram = (options: { transport: "udp"; hostname: string; port: number }) => DatagramConn;

/** The largest UDP payload over IPv4 (65,535 − 8 − 20): a datagram is never cut short. */
const RECEIVE_BUFFER = 65_507;

const listenDatagram = (): ListenDatagram | undefined =>
  (Deno as unknown as { listenDatagram?: ListenDatagram }).listenDatagram;

/** Why Deno has no UDP here, or undefined when it has. */
export function denoUdpUnavailable(): string | undefined {
  return typeof listenDatagram() === "function"
    ? undefined
    : "Deno.listenDatagram needs --unstable-net (deno run --unstable-net ...)";
}

/** Binds a Deno datagram socket as a {@linkcode UdpSocket}. */
export function denoUdp(options: UdpBindOptions): Promise<UdpSocket> {
  const listen = listenDatagram();
  if (!listen) return Promise.reject(new Error(denoUdpUnavailable()));
  const host = unmapIPv4(options.host);
  const v6 = parseIPv4(host) === null;
  let conn: DatagramConn;
  try {
    conn = listen({ transport: "udp", hostname: host, port: options.port });
  } catch (error) {
    return Promise.reject(error);
  }
  let closed = false;
  let pending = 0;
  const buffer = new Uint8Array(RECEIVE_BUFFER);
  const receive = (): void => {
    conn.receive(buffer).then(([data, from]) => {
      if (closed) return;
      options.onDatagram(data.slice(), { host: unmapIPv4(from.hostname), port: from.port });
      receive();
    }, () => {
      // Closed, or a receive error (an ICMP report, on some systems): go on unless closed.
      if (!closed) setTimeout(receive, 10);
    });
  };
  receive();
  return Promise.resolve({
    address: { host: unmapIPv4(conn.addr.hostname), port: conn.addr.port },
    get pending() {
      return pending;
    },
    send(data, to, port) {
      if (closed) return false;
      const plain = unmapIPv4(to);
      const v4 = parseIPv4(plain) !== null;
      if (!v6 && !v4) return false;
      const hostname = v6 && v4 ? `::ffff:${plain}` : plain;
      pending += data.length;
      try {
        conn.send(data, { transport: "udp", hostname, port }).then(
          () => void (pending -= data.length),
          () => void (pending -= data.length),
        );
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
        conn.close();
      } catch { /* already closed */ }
    },
  });
}
