// SOCKS over any byte stream: the handler takes a Web Streams pair, so a WebSocket, a TLS stream or, as here,
// an in-memory pair can be served. Runs as it is on Deno, Bun and Node ≥ 22.18, with no network at all: the
// "outbound" connections are in-memory too (an echo service), and names resolve from a fixed table.
//   deno run examples/web_streams.ts  |  bun examples/web_streams.ts  |  node examples/web_streams.ts
import { type ByteConnection, createHandler, fromWebStreams, parseRule, type Resolver } from "../mod.ts";

/** Two connected in-memory ends: what one writes, the other reads. */
function memoryPair(): [
  ByteConnection,
  { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> },
] {
  const there = new TransformStream<Uint8Array, Uint8Array>();
  const back = new TransformStream<Uint8Array, Uint8Array>();
  return [fromWebStreams({ readable: there.readable, writable: back.writable }), {
    readable: back.readable,
    writable: there.writable,
  }];
}

/** An in-memory "server" that sends back what it gets, then ends. */
function echoService(): ByteConnection {
  const [near, far] = memoryPair();
  void far.readable.pipeTo(far.writable);
  return Object.assign(near, { localAddress: { host: "192.0.2.10", port: 40000 } });
}

const resolver: Resolver = {
  lookup: (name) => Promise.resolve(name === "echo.example" ? ["203.0.113.7"] : []),
  reverse: () => Promise.resolve([]),
};

/** Runs one SOCKS5 CONNECT to echo.example:7 through the handler; returns what the client saw. */
export async function main(): Promise<{ replies: string; echoed: string; outcome: string }> {
  const handle = createHandler({
    dial: () => Promise.resolve(echoService()),
    resolver,
    // 203.0.113.7 is a documentation address, refused by default like every address that is not globally
    // reachable: a rule lets it through (it is never dialled here anyway).
    policy: { rules: [parseRule("allow", "connect@203.0.113.0/24")] },
  });
  const [server, client] = memoryPair();
  const done = handle(server);
  // Read while writing: a stream pair has no buffer to speak of, so a client that only wrote would stall.
  const reading = (async () => {
    let got = new Uint8Array(0);
    for await (const chunk of client.readable) got = Uint8Array.of(...got, ...chunk);
    return got;
  })();
  const writer = client.writable.getWriter();
  const name = new TextEncoder().encode("echo.example");
  // Greeting and CONNECT to echo.example:7 by name in one write, then data, then our half-close (the echo
  // service ends after answering).
  await writer.write(Uint8Array.of(5, 1, 0, 5, 1, 0, 3, name.length, ...name, 0, 7));
  await writer.write(new TextEncoder().encode("hello"));
  await writer.close();
  const got = await reading;
  const hex = [...got.subarray(0, 12)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  const record = await done;
  return { replies: hex, echoed: new TextDecoder().decode(got.subarray(12)), outcome: record.outcome };
}

if (import.meta.main) console.log(await main());
