/**
 * The UDP part of the adapter contract (`RuntimeAdapter.udp`, lib/runtime.ts),
 * run in a child process so that Deno can run it with --unstable-net (which
 * its Deno.listenDatagram needs) while the test runner runs without it.
 * Loopback only. Prints one line per check (`ok NAME` or `FAIL NAME: why`).
 *
 * Usage: `<runtime> tests/_udp_contract_child.ts <module> <export>`
 */
import { createSocket, type Socket } from "node:dgram";
import process from "node:process";
import type { HostPort, RuntimeAdapter } from "../lib/runtime.ts";

const [module, name] = process.argv.slice(2);
const adapter = (await import(module))[name] as RuntimeAdapter;
const print = (line: string) => process.stdout.write(`${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function peer(
  host: string,
): Promise<{ socket: Socket; port: number; got: { data: Uint8Array; port: number }[] }> {
  const socket = createSocket(host.includes(":") ? "udp6" : "udp4");
  const got: { data: Uint8Array; port: number }[] = [];
  socket.on("message", (data, from) => got.push({ data: new Uint8Array(data), port: from.port }));
  return new Promise((resolve) =>
    socket.bind(0, host, () => resolve({ socket, port: socket.address().port, got }))
  );
}

async function waitFor(cond: () => boolean, ms = 3_000): Promise<boolean> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) return false;
    await sleep(10);
  }
  return true;
}

const checks: [string, () => Promise<string | undefined>][] = [
  ["both ways over 127.0.0.1, source given as IPv4", async () => {
    const received: { data: Uint8Array; from: HostPort }[] = [];
    const socket = await adapter.udp!({
      host: "127.0.0.1",
      port: 0,
      onDatagram: (data, from) => received.push({ data, from }),
    });
    const p = await peer("127.0.0.1");
    try {
      if (socket.address.host !== "127.0.0.1" || socket.address.port === 0) {
        return `bound ${JSON.stringify(socket.address)}`;
      }
      if (!socket.send(Uint8Array.of(1, 2, 3), "127.0.0.1", p.port)) return "send returned false";
      if (!await waitFor(() => p.got.length === 1)) return "the peer got nothing";
      if (p.got[0].port !== socket.address.port || p.got[0].data.join() !== "1,2,3") return "wrong datagram";
      p.socket.send(Uint8Array.of(9, 8), socket.address.port, "127.0.0.1");
      if (!await waitFor(() => received.length === 1)) return "onDatagram was not called";
      const { data, from } = received[0];
      if (data.join() !== "9,8" || from.host !== "127.0.0.1" || from.port !== p.port) {
        return `got ${data.join()} from ${JSON.stringify(from)}`;
      }
      // A mapped destination is the same address.
      if (!socket.send(Uint8Array.of(4), "::ffff:127.0.0.1", p.port)) {
        return "send to ::ffff:127.0.0.1 refused";
      }
      if (!await waitFor(() => p.got.length === 2)) return "nothing arrived sent to ::ffff:127.0.0.1";
      if (socket.pending < 0) return `pending ${socket.pending}`;
      return undefined;
    } finally {
      socket.close();
      p.socket.close();
    }
  }],
  ["both ways over ::1", async () => {
    const received: HostPort[] = [];
    const socket = await adapter.udp!({
      host: "::1",
      port: 0,
      onDatagram: (_d, from) => received.push(from),
    });
    const p = await peer("::1");
    try {
      if (socket.address.host !== "::1") return `bound ${JSON.stringify(socket.address)}`;
      if (!socket.send(Uint8Array.of(6), "::1", p.port)) return "send returned false";
      if (!await waitFor(() => p.got.length === 1)) return "the peer got nothing";
      p.socket.send(Uint8Array.of(7), socket.address.port, "::1");
      if (!await waitFor(() => received.length === 1)) return "onDatagram was not called";
      return received[0].host === "::1" && received[0].port === p.port
        ? undefined
        : JSON.stringify(received[0]);
    } finally {
      socket.close();
      p.socket.close();
    }
  }],
  ["a mapped bind address binds the IPv4 address", async () => {
    const socket = await adapter.udp!({ host: "::ffff:127.0.0.1", port: 0, onDatagram: () => {} });
    socket.close();
    return socket.address.host === "127.0.0.1" ? undefined : JSON.stringify(socket.address);
  }],
  ["send never throws: a name, the other family, too large, after close", async () => {
    const socket = await adapter.udp!({ host: "127.0.0.1", port: 0, onDatagram: () => {} });
    try {
      if (socket.send(Uint8Array.of(1), "localhost", 9)) return "a name was taken";
      if (socket.send(Uint8Array.of(1), "::1", 9)) return "IPv6 from an IPv4 socket was taken";
      socket.send(new Uint8Array(70_000), "127.0.0.1", 9); // false, or taken and failed later: never a throw
      await sleep(50);
    } catch (error) {
      return `threw ${error}`;
    } finally {
      socket.close();
      socket.close();
    }
    return socket.send(Uint8Array.of(1), "127.0.0.1", 9) ? "taken after close" : undefined;
  }],
  ["nothing is delivered after close(); the port is free again", async () => {
    let calls = 0;
    const socket = await adapter.udp!({ host: "127.0.0.1", port: 0, onDatagram: () => calls++ });
    const port = socket.address.port;
    socket.close();
    const p = await peer("127.0.0.1");
    p.socket.send(Uint8Array.of(1), port, "127.0.0.1");
    await sleep(100);
    p.socket.close();
    if (calls !== 0) return `${calls} datagrams after close`;
    const again = await adapter.udp!({ host: "127.0.0.1", port, onDatagram: () => {} });
    again.close();
    return undefined;
  }],
  ["binding a port in use rejects", async () => {
    const socket = await adapter.udp!({ host: "127.0.0.1", port: 0, onDatagram: () => {} });
    try {
      await adapter.udp!({ host: "127.0.0.1", port: socket.address.port, onDatagram: () => {} }).then(
        (s) => (s.close(), Promise.reject(new Error("bound twice"))),
      );
      return "bound twice";
    } catch (error) {
      return String(error).includes("bound twice") ? "bound twice" : undefined;
    } finally {
      socket.close();
    }
  }],
];

if (!adapter.udp) {
  print(`absent: ${adapter.udpUnavailable ?? "(no reason given)"}`);
} else {
  for (const [check, run] of checks) {
    let why: string | undefined;
    try {
      why = await run();
    } catch (error) {
      why = `threw ${error}`;
    }
    print(why === undefined ? `ok ${check}` : `FAIL ${check}: ${why}`);
  }
}
process.exit(0);
