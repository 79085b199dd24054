// A bare TCP forwarder on Deno: the ceiling for edgesocks' Deno relay.
// `deno run -A deno_forward.ts 127.0.0.1:0 127.0.0.1:PORT[,PORT...]` forwards every connection to the
// target ports in turn. A read/write loop per direction on `Deno.Conn` with one buffer per direction that
// starts at 4 KiB and doubles (to 64 KiB) while reads fill it, `closeWrite()` to pass a FIN on, and an
// error on either side closes both.
//
// `deno run -A --unstable-net deno_forward.ts 127.0.0.1:0 socks5 [reuse]` is the least SOCKS5 server Deno
// can run, the floor for any SOCKS5 server's tunnels/s on it: the client's first read is taken for its
// greeting and answered "no authentication", its second for a CONNECT to an IPv4 address (nothing is
// checked), then it answers success with a zero address and forwards as above. `reuse` listens with
// SO_REUSEPORT (which needs `--unstable-net`), so that several copies can share one port.
const MIN_READ = 4 * 1024;
const MAX_READ = 64 * 1024;

const [listen = "127.0.0.1:0", targets = "", reuse] = Deno.args;
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

/** Reads the greeting and the CONNECT, answering the greeting; resolves with the CONNECT's address. */
async function handshake(client: Deno.TcpConn): Promise<Deno.ConnectOptions> {
  const b = new Uint8Array(512);
  if (await client.read(b) === null) throw new Error("closed before its greeting");
  await client.write(NO_AUTH);
  if (await client.read(b) === null) throw new Error("closed before its request");
  return { hostname: `${b[4]}.${b[5]}.${b[6]}.${b[7]}`, port: (b[8] << 8) | b[9] };
}

async function pump(src: Deno.TcpConn, dst: Deno.TcpConn): Promise<void> {
  let buf = new Uint8Array(MIN_READ);
  for (;;) {
    const n = await src.read(buf);
    if (n === null) return await dst.closeWrite();
    for (let off = 0; off < n;) off += await dst.write(buf.subarray(off, n));
    if (n === buf.length && buf.length < MAX_READ) buf = new Uint8Array(buf.length * 2);
  }
}

async function forward(client: Deno.TcpConn): Promise<void> {
  client.setNoDelay(true);
  let upstream: Deno.TcpConn;
  try {
    upstream = await Deno.connect(
      socks5
        ? await handshake(client)
        : { hostname: targetHost, port: targetPorts[next++ % targetPorts.length] },
    );
  } catch {
    client.close();
    return;
  }
  upstream.setNoDelay(true);
  const closeBoth = () => {
    for (const c of [client, upstream]) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
  };
  if (socks5) {
    try {
      await client.write(SUCCEEDED);
    } catch {
      return closeBoth();
    }
  }
  await Promise.all([pump(client, upstream), pump(upstream, client)]).then(closeBoth, closeBoth);
}

const listener = Deno.listen({
  hostname: listenHost,
  port: listenPort,
  ...(reuse === "reuse" ? { reusePort: true } : {}),
});
console.log(
  `deno ${socks5 ? "least SOCKS5 server" : "forwarder"} listening on ${listenHost}:${
    (listener.addr as Deno.NetAddr).port
  }`,
);
for await (const conn of listener) forward(conn);
