// A bare TCP forwarder on Bun: the ceiling for edgesocks' Bun relay.
// `bun bun_forward.ts 127.0.0.1:0 127.0.0.1:PORT[,PORT...]` forwards every connection to the target ports
// in turn. `Bun.listen` / `Bun.connect` sockets: write() returns what the kernel took, the rest is copied
// and finished on 'drain' while the source is paused; a FIN goes on with shutdown() (end() would close the
// whole socket); an error on either side closes both.
//
// `bun bun_forward.ts 127.0.0.1:0 socks5 [reuse]` is the least SOCKS5 server Bun can run, the floor for
// any SOCKS5 server's tunnels/s on it: the client's first read is taken for its greeting and answered
// "no authentication", its second for a CONNECT to an IPv4 address (nothing is checked), then it answers
// success with a zero address and forwards as above. `reuse` listens with SO_REUSEPORT, so that several
// copies can share one port.

/** The part of Bun's socket API used here (Bun's types are not available to `deno check`). */
interface Socket {
  data: Side;
  write(data: Uint8Array): number;
  shutdown(halfClose?: boolean): void;
  end(): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  setNoDelay(noDelay?: boolean): boolean;
}
/** Per socket: its peer, and the bytes still to be written to this socket. */
interface Side {
  peer: Socket | null;
  unsent: Uint8Array | null;
  /** The peer sent its FIN: pass it on once `unsent` is out. */
  finPending: boolean;
  finSent: boolean;
  /** A client of the SOCKS5 mode before its CONNECT: 0 before the greeting, 1 after it. */
  handshake?: number;
}
interface Handlers {
  open?(s: Socket): void;
  data(s: Socket, d: Uint8Array): void;
  drain(s: Socket): void;
  end(s: Socket): void;
  close(s: Socket, error?: Error): void;
  error(s: Socket, error: Error): void;
  connectError?(s: Socket, error: Error): void;
}
interface BunApi {
  argv: string[];
  listen(
    o: { hostname: string; port: number; allowHalfOpen: boolean; reusePort: boolean; socket: Handlers },
  ): { port: number };
  connect(o: { hostname: string; port: number; allowHalfOpen: boolean; socket: Handlers }): Promise<Socket>;
}
const Bun = (globalThis as unknown as { Bun: BunApi }).Bun;

const [listen = "127.0.0.1:0", targets = "", reuse] = Bun.argv.slice(2);
const split = (hostPort: string): [string, number] => {
  const i = hostPort.lastIndexOf(":");
  return [hostPort.slice(0, i), Number(hostPort.slice(i + 1))];
};
const [listenHost, listenPort] = split(listen);
const socks5 = targets === "socks5";
const [targetHost, firstPort] = split(targets.replace(/,.*/, ""));
const targetPorts = [firstPort, ...targets.split(",").slice(1).map(Number)];
let next = 0;
const NO_AUTH = new Uint8Array([5, 0]);
const SUCCEEDED = new Uint8Array([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);

const side = (): Side => ({ peer: null, unsent: null, finPending: false, finSent: false });

function sendFin(s: Socket) {
  if (s.data.finSent) return;
  if (s.data.unsent) {
    s.data.finPending = true;
    return;
  }
  s.data.finSent = true;
  s.shutdown();
}

const handlers: Handlers = {
  data(s, d) {
    const peer = s.data.peer;
    if (!peer) {
      // Not linked yet: the client is paused until its upstream is connected, or this is its handshake.
      if (s.data.handshake === 0) {
        s.data.handshake = 1;
        s.write(NO_AUTH);
      } else if (s.data.handshake === 1) {
        s.data.handshake = undefined;
        s.pause();
        link(s, `${d[4]}.${d[5]}.${d[6]}.${d[7]}`, (d[8] << 8) | d[9]);
      }
      return;
    }
    const n = peer.write(d);
    if (n < d.length) {
      // `d` is ours (Bun gives every callback a buffer of its own): keep the rest, and read no more from
      // `s` until it is out.
      peer.data.unsent = d.subarray(Math.max(n, 0));
      s.pause();
    }
  },
  drain(s) {
    const rest = s.data.unsent;
    if (!rest) return;
    const n = s.write(rest);
    if (n < rest.length) {
      s.data.unsent = rest.subarray(Math.max(n, 0));
      return;
    }
    s.data.unsent = null;
    if (s.data.finPending) sendFin(s);
    s.data.peer?.resume();
  },
  end(s) {
    if (s.data.peer) sendFin(s.data.peer);
  },
  close(s, error) {
    // Bun reports `close` without `end` once both directions are done: pass the FIN on either way.
    const peer = s.data.peer;
    if (!peer) return;
    if (error) peer.terminate();
    else sendFin(peer);
  },
  error(s) {
    s.data.peer?.terminate();
  },
};

/** Connects `client`'s upstream and passes bytes between the two once it is connected. */
function link(client: Socket, hostname: string, port: number) {
  Bun.connect({
    hostname,
    port,
    allowHalfOpen: true,
    socket: {
      ...handlers,
      open(upstream) {
        upstream.data = side();
      },
      connectError: () => client.terminate(),
    },
  }).then((upstream) => {
    upstream.setNoDelay(true);
    upstream.data.peer = client;
    client.data.peer = upstream;
    if (socks5) client.write(SUCCEEDED);
    client.resume();
  }, () => client.terminate());
}

const server = Bun.listen({
  hostname: listenHost,
  port: listenPort,
  allowHalfOpen: true,
  reusePort: reuse === "reuse",
  socket: {
    ...handlers,
    open(client) {
      client.data = side();
      client.setNoDelay(true);
      if (socks5) client.data.handshake = 0;
      else {
        client.pause();
        link(client, targetHost, targetPorts[next++ % targetPorts.length]);
      }
    },
  },
});
console.log(`bun ${socks5 ? "least SOCKS5 server" : "forwarder"} listening on ${listenHost}:${server.port}`);
