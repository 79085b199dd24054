/**
 * Metrics: a reader of the connection records. Records (and the moment a
 * tunnel is granted) go in, counters and histograms come out, and
 * {@linkcode exposition} writes them in the Prometheus text exposition
 * format (version 0.0.4). Pure: no I/O, no timers, no clock.
 *
 * A {@linkcode MetricsSnapshot} is plain JSON data, so the workers of
 * `--workers` can hand theirs to the supervisor, which adds them up
 * ({@linkcode GroupMetrics}) and serves one endpoint for the whole group.
 *
 * @module
 */
import type { ConnectionLog } from "../record.ts";

/**
 * Upper bounds of the duration histograms' buckets, in seconds (Prometheus's default buckets).
 *
 * @example
 * ```ts
 * import { DURATION_BUCKETS } from "@edgesocks/edgesocks";
 * DURATION_BUCKETS.at(-1); // 10: slower than that counts in +Inf only
 * ```
 */
export const DURATION_BUCKETS: readonly number[] = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/**
 * A histogram as counts: `buckets[i]` counts the observations at most
 * `DURATION_BUCKETS[i]` seconds and above the bound before it (not
 * cumulative: the exposition adds them up); `count` includes those above the
 * last bound.
 *
 * @example
 * ```ts
 * import type { HistogramData } from "@edgesocks/edgesocks";
 * const mean = (h: HistogramData) => h.count === 0 ? 0 : h.sum / h.count;
 * ```
 */
export interface HistogramData {
  /** Observations per bucket (not cumulative). */
  buckets: number[];
  /** All observations. */
  count: number;
  /** Their sum, in seconds. */
  sum: number;
}

/**
 * Everything counted so far, as JSON data. Counters only grow; `open` holds
 * the gauges (what is open now).
 *
 * @example
 * ```ts
 * import { Metrics } from "@edgesocks/edgesocks";
 * const metrics = new Metrics();
 * const snapshot = metrics.snapshot({ connections: 0 });
 * JSON.parse(JSON.stringify(snapshot)); // plain data: it survives a pipe between processes
 * ```
 */
export interface MetricsSnapshot {
  /** Connections ended, by outcome code. */
  connections: Record<string, number>;
  /** Requests (a request was parsed), by `protocol command reply` joined by spaces (`socks5 connect granted`). */
  requests: Record<string, number>;
  /** Bytes client → destination. */
  bytesUp: number;
  /** Bytes destination → client. */
  bytesDown: number;
  /** Tunnels granted. */
  tunnels: number;
  /** Connections that failed for DNS (`dns_failed`). */
  dnsFailures: number;
  /** Failed logins (`auth_failed`). */
  authFailures: number;
  /** From accept to a complete request, per connection that got that far. */
  handshake: HistogramData;
  /** From the request to the reply, per CONNECT and CONNECT_DIR (DNS and dialling, granted or not). */
  connect: HistogramData;
  /** What is open now. */
  open: { connections: number; tunnels: number };
}

function emptyHistogram(): HistogramData {
  return { buckets: DURATION_BUCKETS.map(() => 0), count: 0, sum: 0 };
}

function observe(h: HistogramData, seconds: number): void {
  const i = DURATION_BUCKETS.findIndex((bound) => seconds <= bound);
  if (i >= 0) h.buckets[i]++;
  h.count++;
  h.sum += seconds;
}

/**
 * An empty snapshot.
 *
 * @example
 * ```ts
 * import { emptySnapshot, exposition } from "@edgesocks/edgesocks";
 * const zeros = exposition(emptySnapshot()); // every series, at 0
 * ```
 */
export function emptySnapshot(): MetricsSnapshot {
  return {
    connections: {},
    requests: {},
    bytesUp: 0,
    bytesDown: 0,
    tunnels: 0,
    dnsFailures: 0,
    authFailures: 0,
    handshake: emptyHistogram(),
    connect: emptyHistogram(),
    open: { connections: 0, tunnels: 0 },
  };
}

/**
 * Counts records: give it every record when its connection ends
 * ({@linkcode Metrics.record}) and every record when its tunnel is granted
 * ({@linkcode Metrics.granted}), e.g. as a server's `onLog` and `onGranted`.
 *
 * @example
 * ```ts
 * import { exposition, Metrics, serve } from "@edgesocks/edgesocks";
 * import { nodeAdapter } from "@edgesocks/edgesocks/node";
 * const metrics = new Metrics();
 * const server = await serve(nodeAdapter, {
 *   onLog: (r) => metrics.record(r),
 *   onGranted: (r) => metrics.granted(r),
 * });
 * const text = exposition(metrics.snapshot({ connections: server.activeConnections }));
 * ```
 */
export class Metrics {
  #s: MetricsSnapshot = emptySnapshot();
  #openTunnels = 0;
  #open = new WeakSet<ConnectionLog>();

  /** A tunnel was granted: it is open until its record ends. Its handshake and connect times count now. */
  granted(record: ConnectionLog): void {
    if (this.#open.has(record)) return;
    this.#open.add(record);
    this.#s.tunnels++;
    this.#openTunnels++;
    this.#durations(record);
  }

  #durations(r: ConnectionLog): void {
    if (r.handshakeMs !== undefined) observe(this.#s.handshake, r.handshakeMs / 1000);
    if (r.connectMs !== undefined) observe(this.#s.connect, r.connectMs / 1000);
  }

  /** A connection ended with `record`. */
  record(r: ConnectionLog): void {
    const s = this.#s;
    s.connections[r.outcome] = (s.connections[r.outcome] ?? 0) + 1;
    const protocol = r.protocol ?? (r.version !== undefined ? `socks${r.version}` : undefined);
    if (protocol !== undefined && r.command !== undefined) {
      const key = `${protocol} ${r.command} ${r.reply}`;
      s.requests[key] = (s.requests[key] ?? 0) + 1;
    }
    s.bytesUp += r.up;
    s.bytesDown += r.down;
    if (r.outcome === "dns_failed") s.dnsFailures++;
    if (r.outcome === "auth_failed") s.authFailures++;
    // A tunnel's durations were counted when it was granted.
    if (this.#open.delete(r)) this.#openTunnels--;
    else this.#durations(r);
  }

  /** A copy of the counts, with `connections` open now (a server's `activeConnections`). */
  snapshot(open: { connections: number }): MetricsSnapshot {
    const copy = structuredClone(this.#s);
    copy.open = { connections: open.connections, tunnels: this.#openTunnels };
    return copy;
  }
}

function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

function addHistogram(into: HistogramData, from: HistogramData): void {
  for (let i = 0; i < into.buckets.length; i++) into.buckets[i] += from.buckets[i] ?? 0;
  into.count += from.count;
  into.sum += from.sum;
}

/**
 * The sum of `snapshots`; with `counters` only, the gauges (`open`) are left
 * at 0 (for processes that have gone: what they counted stays, nothing of
 * theirs is open).
 *
 * @example
 * ```ts
 * import { mergeSnapshots, type MetricsSnapshot } from "@edgesocks/edgesocks";
 * declare const a: MetricsSnapshot, b: MetricsSnapshot;
 * const both = mergeSnapshots([a, b]);
 * ```
 */
export function mergeSnapshots(snapshots: readonly MetricsSnapshot[], counters = false): MetricsSnapshot {
  const out = emptySnapshot();
  for (const s of snapshots) {
    addCounts(out.connections, s.connections);
    addCounts(out.requests, s.requests);
    out.bytesUp += s.bytesUp;
    out.bytesDown += s.bytesDown;
    out.tunnels += s.tunnels;
    out.dnsFailures += s.dnsFailures;
    out.authFailures += s.authFailures;
    addHistogram(out.handshake, s.handshake);
    addHistogram(out.connect, s.connect);
    if (!counters) {
      out.open.connections += s.open.connections;
      out.open.tunnels += s.open.tunnels;
    }
  }
  return out;
}

/**
 * Checks that `value` is a snapshot (from another process); throws a TypeError if not.
 *
 * @example
 * ```ts
 * import { parseSnapshot } from "@edgesocks/edgesocks";
 * declare const line: string; // JSON from a worker
 * const snapshot = parseSnapshot(JSON.parse(line));
 * ```
 */
export function parseSnapshot(value: unknown): MetricsSnapshot {
  const v = value as MetricsSnapshot;
  const num = (n: unknown) => typeof n === "number" && Number.isFinite(n) && n >= 0;
  const counts = (c: unknown) => typeof c === "object" && c !== null && Object.values(c as object).every(num);
  const hist = (h: HistogramData) =>
    typeof h === "object" && h !== null && Array.isArray(h.buckets) &&
    h.buckets.length === DURATION_BUCKETS.length && h.buckets.every(num) && num(h.count) && num(h.sum);
  if (
    typeof v !== "object" || v === null || !counts(v.connections) || !counts(v.requests) ||
    ![v.bytesUp, v.bytesDown, v.tunnels, v.dnsFailures, v.authFailures].every(num) ||
    !hist(v.handshake) || !hist(v.connect) || typeof v.open !== "object" || v.open === null ||
    !num(v.open.connections) || !num(v.open.tunnels)
  ) {
    throw new TypeError("not a metrics snapshot");
  }
  return v;
}

/**
 * The metrics of a group of processes (`--workers`): the latest snapshot of
 * each live worker, plus the counters of those that have gone.
 *
 * @example
 * ```ts
 * import { emptySnapshot, GroupMetrics } from "@edgesocks/edgesocks";
 * const group = new GroupMetrics();
 * group.update(1, { ...emptySnapshot(), bytesUp: 10 });
 * group.retire(1); // worker 1 exited: its 10 bytes still count
 * group.snapshot().bytesUp; // 10
 * ```
 */
export class GroupMetrics {
  #live = new Map<number, MetricsSnapshot>();
  #gone: MetricsSnapshot = emptySnapshot();

  /** Worker `worker` counted `snapshot` so far. */
  update(worker: number, snapshot: MetricsSnapshot): void {
    this.#live.set(worker, snapshot);
  }

  /** Worker `worker` has gone: keep its counters, drop its gauges. */
  retire(worker: number): void {
    const last = this.#live.get(worker);
    if (!last) return;
    this.#live.delete(worker);
    this.#gone = mergeSnapshots([this.#gone, last], true);
  }

  /** Workers that have sent a snapshot and not gone. */
  get workers(): number {
    return this.#live.size;
  }

  /** The whole group. */
  snapshot(): MetricsSnapshot {
    return mergeSnapshots([this.#gone, ...this.#live.values()]);
  }
}

/**
 * Extra series for {@linkcode exposition}.
 *
 * @example
 * ```ts
 * import { emptySnapshot, exposition, type ExpositionExtras } from "@edgesocks/edgesocks";
 * const extras: ExpositionExtras = { draining: false, build: { version: "0.1.0", runtime: "node" } };
 * const text = exposition(emptySnapshot(), extras);
 * ```
 */
export interface ExpositionExtras {
  /** 1 while draining (`/readyz` answers 503), else 0. */
  draining?: boolean;
  /** Reloads so far, by result. */
  reloads?: { ok: number; failed: number };
  /** `edgesocks_build_info` labels. */
  build?: { version: string; runtime: string };
  /** Worker processes serving (`--workers`). */
  workers?: number;
}

/** A label value, escaped as the text format wants (backslash, quote, newline). */
function label(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function num(n: number): string {
  return Number.isInteger(n) ? String(n) : String(Number(n.toFixed(6)));
}

/** Every outcome, so each series exists (at 0) from the start, as Prometheus advises. */
const OUTCOMES = [
  "tunnel_done",
  "tunnel_idle",
  "tunnel_error",
  "resolved",
  "refused_client",
  "refused_limit",
  "refused_backoff",
  "refused_policy",
  "auth_failed",
  "auth_unavailable",
  "protocol_error",
  "http_request",
  "unsupported",
  "handshake_timeout",
  "client_closed",
  "client_error",
  "dns_failed",
  "upstream_failed",
  "connect_timeout",
  "shutdown",
  "error",
];

/**
 * The Prometheus text exposition (format 0.0.4) of `s`; serve it as
 * `text/plain; version=0.0.4; charset=utf-8`.
 *
 * @example
 * ```ts
 * import { emptySnapshot, exposition } from "@edgesocks/edgesocks";
 * const text = exposition(emptySnapshot());
 * text.includes('edgesocks_bytes_total{direction="up"} 0'); // true
 * ```
 */
export function exposition(s: MetricsSnapshot, extras: ExpositionExtras = {}): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  };
  family(
    "edgesocks_connections_total",
    "counter",
    "Connections ended, by outcome (refused_* and auth_failed: refused, and why).",
  );
  const outcomes = [...new Set([...OUTCOMES, ...Object.keys(s.connections)])];
  for (const o of outcomes) {
    out.push(`edgesocks_connections_total{outcome="${label(o)}"} ${s.connections[o] ?? 0}`);
  }
  const accepted = Object.values(s.connections).reduce((a, b) => a + b, 0) + s.open.connections;
  family("edgesocks_connections_accepted_total", "counter", "Connections accepted (ended and open).");
  out.push(`edgesocks_connections_accepted_total ${accepted}`);
  family("edgesocks_connections_open", "gauge", "Connections being served now.");
  out.push(`edgesocks_connections_open ${s.open.connections}`);
  family(
    "edgesocks_requests_total",
    "counter",
    'Requests parsed, by protocol (socks4, socks5, http), command and reply ("granted" for a tunnel, else the reply byte).',
  );
  for (const key of Object.keys(s.requests).sort()) {
    const [protocol, command, reply] = key.split(" ");
    out.push(
      `edgesocks_requests_total{protocol="${label(protocol)}",command="${label(command)}",reply="${
        label(reply)
      }"} ${s.requests[key]}`,
    );
  }
  family("edgesocks_bytes_total", "counter", "Bytes relayed: up is client to destination, down the reverse.");
  out.push(`edgesocks_bytes_total{direction="up"} ${s.bytesUp}`);
  out.push(`edgesocks_bytes_total{direction="down"} ${s.bytesDown}`);
  family("edgesocks_tunnels_total", "counter", "Tunnels granted.");
  out.push(`edgesocks_tunnels_total ${s.tunnels}`);
  family("edgesocks_tunnels_open", "gauge", "Tunnels open now.");
  out.push(`edgesocks_tunnels_open ${s.open.tunnels}`);
  family("edgesocks_dns_failures_total", "counter", "Requests that failed because the name did not resolve.");
  out.push(`edgesocks_dns_failures_total ${s.dnsFailures}`);
  family("edgesocks_auth_failures_total", "counter", "Failed logins (wrong username or password).");
  out.push(`edgesocks_auth_failures_total ${s.authFailures}`);
  const histogram = (name: string, help: string, h: HistogramData) => {
    family(name, "histogram", help);
    let cumulative = 0;
    DURATION_BUCKETS.forEach((bound, i) => {
      cumulative += h.buckets[i];
      out.push(`${name}_bucket{le="${bound}"} ${cumulative}`);
    });
    out.push(`${name}_bucket{le="+Inf"} ${h.count}`, `${name}_sum ${num(h.sum)}`, `${name}_count ${h.count}`);
  };
  histogram(
    "edgesocks_handshake_duration_seconds",
    "From accept to a complete request.",
    s.handshake,
  );
  histogram(
    "edgesocks_connect_duration_seconds",
    "From a CONNECT or CONNECT_DIR request to its reply (DNS and dialling, granted or not).",
    s.connect,
  );
  if (extras.draining !== undefined) {
    family("edgesocks_draining", "gauge", "1 while draining (readyz answers 503).");
    out.push(`edgesocks_draining ${extras.draining ? 1 : 0}`);
  }
  if (extras.reloads) {
    family("edgesocks_reloads_total", "counter", "Reloads of the configuration (SIGHUP), by result.");
    out.push(`edgesocks_reloads_total{result="ok"} ${extras.reloads.ok}`);
    out.push(`edgesocks_reloads_total{result="failed"} ${extras.reloads.failed}`);
  }
  if (extras.workers !== undefined) {
    family("edgesocks_workers", "gauge", "Worker processes reporting.");
    out.push(`edgesocks_workers ${extras.workers}`);
  }
  if (extras.build) {
    family("edgesocks_build_info", "gauge", "Always 1; the labels say which build runs.");
    out.push(
      `edgesocks_build_info{version="${label(extras.build.version)}",runtime="${
        label(extras.build.runtime)
      }"} 1`,
    );
  }
  return out.join("\n") + "\n";
}
