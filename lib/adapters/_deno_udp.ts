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
import { udpRelaySocket } from "./_udp_socket.ts";

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
  const socket = udpRelaySocket(
    {
      send: (data, hostname, port, done) =>
        void conn.send(data, { transport: "udp", hostname, port }).then(done, done),
      close: () => conn.close(),
    },
    { host: conn.addr.hostname, port: conn.addr.port },
    v6,
  );
  const buffer = new Uint8Array(RECEIVE_BUFFER);
  const receive = (): void => {
    conn.receive(buffer).then(([data, from]) => {
      if (socket.closed) return;
      options.onDatagram(data.slice(), { host: unmapIPv4(from.hostname), port: from.port });
      receive();
    }, () => {
      // Closed, or a receive error (an ICMP report, on some systems): go on unless closed.
      if (!socket.closed) setTimeout(receive, 10);
    });
  };
  receive();
  return Promise.resolve(socket);
}
