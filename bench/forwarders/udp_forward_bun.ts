// A bare UDP forwarder on Bun (Bun.udpSocket): the ceiling for edgesocks' UDP relay on Bun.
// `bun udp_forward_bun.ts 127.0.0.1:TARGET_PORT`; see udp_forward_node.mjs.

/** The part of Bun's UDP API used here (Bun's types are not available to `deno check`). */
interface UdpSocket {
  readonly port: number;
  send(data: Uint8Array, port: number, address: string): boolean;
}
type Data = (s: UdpSocket, data: Uint8Array, port: number, address: string) => void;
const bun = (globalThis as unknown as {
  Bun: { udpSocket(o: { hostname: string; port: number; socket: { data: Data } }): Promise<UdpSocket> };
}).Bun;

const target = Number(process.argv[2].split(":")[1]);
let client: { port: number; address: string } | null = null;
let front: UdpSocket | null = null;
const back = await bun.udpSocket({
  hostname: "127.0.0.1",
  port: 0,
  socket: { data: (_s, data) => void (client && front?.send(data, client.port, client.address)) },
});
front = await bun.udpSocket({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    data: (_s, data, port, address) => {
      client = { port, address };
      back.send(data, target, "127.0.0.1");
    },
  },
});
console.log(`listening on 127.0.0.1:${front.port}`);
