// A bare TCP forwarder on Deno: the ceiling for edgesocks' Deno relay.
// `deno run -A deno_forward.ts 127.0.0.1:0 127.0.0.1:PORT[,PORT...]` forwards every connection to the
// target ports in turn. A read/write loop per direction on `Deno.Conn` with one buffer per direction that
// starts at 4 KiB and doubles (to 64 KiB) while reads fill it, `closeWrite()` to pass a FIN on, and an
// error on either side closes both.
const MIN_READ = 4 * 1024;
const MAX_READ = 64 * 1024;

const [listen = "127.0.0.1:0", targets = ""] = Deno.args;
const split = (hostPort: string): [string, number] => {
  const i = hostPort.lastIndexOf(":");
  return [hostPort.slice(0, i), Number(hostPort.slice(i + 1))];
};
const [listenHost, listenPort] = split(listen);
const [targetHost, firstPort] = split(targets.replace(/,.*/, ""));
const targetPorts = [firstPort, ...targets.split(",").slice(1).map(Number)];
let next = 0;

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
  let upstream: Deno.TcpConn;
  try {
    upstream = await Deno.connect({ hostname: targetHost, port: targetPorts[next++ % targetPorts.length] });
  } catch {
    client.close();
    return;
  }
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  const closeBoth = () => {
    for (const c of [client, upstream]) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
  };
  await Promise.all([pump(client, upstream), pump(upstream, client)]).then(closeBoth, closeBoth);
}

const listener = Deno.listen({ hostname: listenHost, port: listenPort });
console.log(`deno forwarder listening on ${listenHost}:${(listener.addr as Deno.NetAddr).port}`);
for await (const conn of listener) forward(conn);
