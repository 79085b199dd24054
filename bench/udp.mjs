// The UDP part of the bench (`node bench/run.mjs --parts udp`): datagrams per second through a UDP
// ASSOCIATE relay of edgesocks on each runtime, against a bare UDP forwarder on the same runtime
// (bench/forwarders/udp_forward_*) and against no relay at all. Loopback only, bounded in count and time.
//
// The client (this process, node:dgram) keeps WINDOW datagrams of SIZE bytes in flight to a UDP echo
// server (bench/forwarders/udp_echo.mjs, its own process), sends one more for each answer, and counts the
// answers: round trips per second (each is two datagrams through the relay). A window that gets no answer
// for 100 ms counts as lost and is sent again. edgesocks runs with --udp-rate 0 (its per-association cap,
// 20,000 datagrams/s by default, would otherwise be what is measured).
import { createSocket } from "node:dgram";
import net from "node:net";

const SIZE = 512;
const WINDOW = 32;

/** Round trips per second between a fresh UDP socket and `to` (wrapped and unwrapped as given). */
function roundTrips(to, { wrap = (d) => d, unwrapLength = 0, count, seconds }) {
  return new Promise((resolve, reject) => {
    const socket = createSocket("udp4");
    const payload = wrap(Buffer.alloc(SIZE, 0x61));
    let sent = 0, answered = 0, lost = 0, inFlight = 0, last = Date.now();
    const t0 = Date.now();
    const send = () => {
      while (inFlight < WINDOW && sent < count) {
        socket.send(payload, to.port, to.host);
        sent++;
        inFlight++;
      }
    };
    const finish = () => {
      clearInterval(watch);
      socket.close();
      const elapsed = (Date.now() - t0) / 1000;
      resolve({ perSecond: answered / elapsed, answered, lost, seconds: elapsed });
    };
    const watch = setInterval(() => {
      if (answered >= count || Date.now() - t0 > seconds * 1000) return finish();
      if (Date.now() - last > 100 && inFlight > 0) {
        lost += inFlight;
        inFlight = 0;
        last = Date.now();
        if (sent >= count) return finish();
        send();
      }
    }, 25);
    socket.on("message", (data) => {
      if (data.length !== SIZE + unwrapLength) return;
      answered++;
      inFlight = Math.max(0, inFlight - 1);
      last = Date.now();
      if (answered >= count) return finish();
      send();
    });
    socket.on("error", (error) => {
      clearInterval(watch);
      reject(error);
    });
    socket.bind(0, "127.0.0.1", send);
  });
}

/** A UDP ASSOCIATE on edgesocks at `port`: the control connection and the relay's address. */
function associate(port) {
  return new Promise((resolve, reject) => {
    const control = net.connect(port, "127.0.0.1");
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => (control.destroy(), reject(new Error("no UDP ASSOCIATE reply"))), 5_000);
    control.on("error", reject);
    control.on("connect", () => control.write(Buffer.of(5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0)));
    control.on("data", (d) => {
      got = Buffer.concat([got, d]);
      if (got.length < 12) return;
      clearTimeout(timer);
      if (got[3] !== 0) return reject(new Error(`UDP ASSOCIATE refused: ${got.subarray(2).toString("hex")}`));
      resolve({ control, relay: { host: [...got.subarray(6, 10)].join("."), port: got.readUInt16BE(10) } });
    });
  });
}

/** The RFC 1928 header to 127.0.0.1:`port`. */
const header = (port) => Buffer.of(0, 0, 0, 1, 127, 0, 0, 1, port >> 8, port & 0xff);

/**
 * Measures every subject; `tools` are run.mjs's process helpers. Resolves with
 * { echo, runs: { id: { label, perSecond: [..], lost: [..], errors: [..] } } }.
 */
export async function measureUdp({ only, quick, runs, bin, launch, stop, waitFor, log }) {
  const count = quick ? 5_000 : 100_000;
  const seconds = quick ? 10 : 30;
  const listening = /listening on 127\.0\.0\.1:(\d+)/;
  const started = [];
  const start = async (name, cmd, args) => {
    const proc = launch(name, cmd, args);
    started.push(proc);
    const m = await waitFor(proc, (p) => listening.exec(p.out), 30_000, "startup line");
    return { proc, port: Number(m[1]) };
  };
  const results = {};
  try {
    const echo = await start("udp echo", bin("node"), ["bench/forwarders/udp_echo.mjs"]);
    const forwarder = {
      deno: [bin("deno"), ["run", "-A", "--unstable-net", "bench/forwarders/udp_forward_deno.ts"]],
      bun: [bin("bun"), ["bench/forwarders/udp_forward_bun.ts"]],
      node: [bin("node"), ["bench/forwarders/udp_forward_node.mjs"]],
    };
    const proxy = ["mod.ts", "--listen", "127.0.0.1:0", "--allow-private", "--udp", "--udp-rate", "0"];
    const edgesocks = {
      deno: [bin("deno"), ["run", "-A", "--unstable-net", ...proxy]],
      bun: [bin("bun"), proxy],
      node: [bin("node"), proxy],
    };
    const subjects = [{
      id: "udp-direct",
      label: "direct (no relay)",
      measure: () => roundTrips({ host: "127.0.0.1", port: echo.port }, { count, seconds }),
    }];
    for (const rt of only) {
      let fwd, es;
      subjects.push({
        id: `udp-${rt}-forwarder`,
        label: `${rt} bare UDP forwarder`,
        runtime: rt,
        measure: async () => {
          fwd ??= await start(`${rt} udp forwarder`, forwarder[rt][0], [
            ...forwarder[rt][1],
            `127.0.0.1:${echo.port}`,
          ]);
          return roundTrips({ host: "127.0.0.1", port: fwd.port }, { count, seconds });
        },
      });
      subjects.push({
        id: `udp-${rt}-edgesocks`,
        label: `edgesocks on ${rt}, UDP ASSOCIATE`,
        runtime: rt,
        measure: async () => {
          es ??= await start(`edgesocks ${rt} --udp`, ...edgesocks[rt]);
          const { control, relay } = await associate(es.port);
          try {
            return await roundTrips(relay, {
              wrap: (d) => Buffer.concat([header(echo.port), d]),
              unwrapLength: 10,
              count,
              seconds,
            });
          } finally {
            control.destroy();
          }
        },
      });
    }
    for (const s of subjects) results[s.id] = { label: s.label, perSecond: [], lost: [], errors: [] };
    for (let run = 1; run <= runs; run++) {
      for (const s of subjects) {
        try {
          const r = await s.measure();
          results[s.id].perSecond.push(r.perSecond);
          results[s.id].lost.push(r.lost);
          log(`udp ${run}/${runs} ${s.label}: ${Math.round(r.perSecond)} round trips/s (${r.lost} lost)`);
        } catch (error) {
          results[s.id].errors.push(error.message);
          log(`udp ${run}/${runs} ${s.label}: FAILED ${error.message}`);
        }
      }
    }
  } finally {
    for (const proc of started) await stop(proc);
  }
  return results;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};

/** The Markdown section of the UDP results. */
export function udpReport(results) {
  const rows = Object.entries(results).map(([id, r]) => {
    const rt = /^udp-(\w+)-edgesocks$/.exec(id)?.[1];
    const bare = rt ? results[`udp-${rt}-forwarder`] : undefined;
    const ratio = bare && r.perSecond.length && bare.perSecond.length
      ? (median(r.perSecond) / median(bare.perSecond)).toFixed(2)
      : "";
    const value = r.perSecond.length ? Math.round(median(r.perSecond)).toLocaleString("en-US") : "failed";
    return `| ${r.label} | ${value} | ${r.lost.reduce((a, b) => a + b, 0)} | ${ratio} | ${
      r.errors.slice(0, 1).join("")
    } |`;
  });
  return [
    `### UDP round trips per second (${SIZE}-byte datagrams, ${WINDOW} in flight)`,
    "",
    "| subject | round trips/s | lost | ÷ own bare forwarder | note |",
    "| --- | ---: | ---: | ---: | --- |",
    ...rows,
  ].join("\n");
}
