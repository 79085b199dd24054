// A bare UDP forwarder on Deno (Deno.listenDatagram, behind --unstable-net): the ceiling for edgesocks'
// UDP relay on Deno. `deno run -A --unstable-net udp_forward_deno.ts 127.0.0.1:TARGET_PORT`; see
// udp_forward_node.mjs. One receive loop per socket, each with one buffer reused (as edgesocks does).

interface Addr {
  transport: "udp";
  hostname: string;
  port: number;
}
interface DatagramConn {
  readonly addr: Addr;
  receive(buffer?: Uint8Array): Promise<[Uint8Array, Addr]>;
  send(data: Uint8Array, to: Addr): Promise<number>;
}
const listen = (Deno as unknown as {
  listenDatagram(o: { transport: "udp"; hostname: string; port: number }): DatagramConn;
}).listenDatagram;

const target: Addr = { transport: "udp", hostname: "127.0.0.1", port: Number(Deno.args[0].split(":")[1]) };
const front = listen({ transport: "udp", hostname: "127.0.0.1", port: 0 });
const back = listen({ transport: "udp", hostname: "127.0.0.1", port: 0 });
let client: Addr | null = null;
console.log(`listening on 127.0.0.1:${front.addr.port}`);
(async () => {
  const buffer = new Uint8Array(65_507);
  for (;;) {
    const [data] = await back.receive(buffer);
    if (client) front.send(data.slice(), client).catch(() => {});
  }
})();
const buffer = new Uint8Array(65_507);
for (;;) {
  const [data, from] = await front.receive(buffer);
  client = from;
  back.send(data.slice(), target).catch(() => {});
}
