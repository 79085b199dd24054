/**
 * Timers and shutdown listeners shared by the tunnels of the native relays,
 * so that an idle tunnel holds no timer, closure or listener of its own: the
 * tunnels with the same idle timeout share one list and one timer, the
 * tunnels of one shutdown signal share one listener. Runtime-neutral; used by
 * the Bun adapter (any other relay may take them up).
 *
 * @module
 */

/**
 * A relayed tunnel as the shared idle lists and signal watches see it: its
 * links in an idle list, its last activity, and how to stop it.
 */
export interface TrackedTunnel {
  /** The idle list the tunnel is in, if any. */
  idle: IdleList | null;
  /** `Date.now()` of its last activity. */
  last: number;
  prev: TrackedTunnel | null;
  next: TrackedTunnel | null;
  /** Closes both sides; called once for "idle" or "aborted". */
  stop(end: "idle" | "aborted"): void;
}

/**
 * The tunnels that share one idle timeout, least recently active first, in a
 * list threaded through the tunnels themselves: one timer for them all, not a
 * timer and its closure per tunnel. Bytes moving put a tunnel at the end.
 */
export class IdleList {
  readonly ms: number;
  head: TrackedTunnel | null = null;
  tail: TrackedTunnel | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #expire = () => {
    this.#timer = undefined;
    const now = Date.now();
    for (let t = this.head; t && now - t.last >= this.ms; t = this.head) {
      this.remove(t);
      t.stop("idle");
    }
    if (this.head) this.#timer = setTimeout(this.#expire, this.head.last + this.ms - now);
  };

  constructor(ms: number) {
    this.ms = ms;
  }

  add(t: TrackedTunnel) {
    t.idle = this;
    t.last = Date.now();
    this.#append(t);
    this.#timer ??= setTimeout(this.#expire, this.ms);
  }

  touch(t: TrackedTunnel) {
    t.last = Date.now();
    if (t === this.tail) return;
    this.#unlink(t);
    this.#append(t);
  }

  remove(t: TrackedTunnel) {
    if (t.idle !== this) return;
    t.idle = null;
    this.#unlink(t);
    if (this.head) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    idleLists.delete(this.ms);
  }

  #append(t: TrackedTunnel) {
    t.prev = this.tail;
    t.next = null;
    if (this.tail) this.tail.next = t;
    else this.head = t;
    this.tail = t;
  }

  #unlink(t: TrackedTunnel) {
    if (t.prev) t.prev.next = t.next;
    else this.head = t.next;
    if (t.next) t.next.prev = t.prev;
    else this.tail = t.prev;
    t.prev = t.next = null;
  }
}

/** One list per idle timeout in use (a server has one). */
const idleLists = new Map<number, IdleList>();

export function idleList(ms: number): IdleList {
  let list = idleLists.get(ms);
  if (!list) idleLists.set(ms, list = new IdleList(ms));
  return list;
}

/** The tunnels a shutdown signal stops, and the one listener that stops them. */
interface Watch {
  tunnels: Set<TrackedTunnel>;
  onAbort: () => void;
}

/** One listener per signal in use, not one per tunnel. */
const watches = new Map<AbortSignal, Watch>();

export function watch(signal: AbortSignal, t: TrackedTunnel) {
  let w = watches.get(signal);
  if (!w) {
    const tunnels = new Set<TrackedTunnel>();
    const onAbort = () => {
      watches.delete(signal);
      for (const x of tunnels) x.stop("aborted");
    };
    watches.set(signal, w = { tunnels, onAbort });
    signal.addEventListener("abort", onAbort, { once: true });
  }
  w.tunnels.add(t);
}

export function unwatch(signal: AbortSignal, t: TrackedTunnel) {
  const w = watches.get(signal);
  if (!w || !w.tunnels.delete(t) || w.tunnels.size > 0) return;
  watches.delete(signal);
  signal.removeEventListener("abort", w.onAbort);
}
