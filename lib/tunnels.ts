/**
 * Timers and shutdown listeners shared by the tunnels of the native relays,
 * so that an idle tunnel holds no timer, closure or listener of its own: the
 * tunnels with the same idle timeout share one list and one timer, the
 * connections of one shutdown signal share one listener. Runtime-neutral: the
 * idle lists serve Bun's relay, the shutdown watches the driver and every relay.
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

/**
 * What a shutdown signal stops: a tunnel (its `stop("aborted")`) or any
 * callback (the driver's handshake and connect phases, the other relays).
 */
export type Watcher = (() => void) | { stop(end: "aborted"): void };

/** The watchers of one shutdown signal, and the one listener that calls them. */
interface Watch {
  watchers: Set<Watcher>;
  onAbort: () => void;
}

/**
 * One listener per signal in use, not one per connection: adding and removing
 * a watcher costs the same with 10 or 10,000 connections open, where an
 * `EventTarget` searches its list to remove a listener.
 */
const watches = new Map<AbortSignal, Watch>();

/** Calls `w` when `signal` aborts (the caller checks `signal.aborted` first). */
export function watch(signal: AbortSignal, w: Watcher) {
  let entry = watches.get(signal);
  if (!entry) {
    const watchers = new Set<Watcher>();
    const onAbort = () => {
      watches.delete(signal);
      for (const x of watchers) {
        if (typeof x === "function") x();
        else x.stop("aborted");
      }
    };
    watches.set(signal, entry = { watchers, onAbort });
    signal.addEventListener("abort", onAbort, { once: true });
  }
  entry.watchers.add(w);
}

/** Stops watching; the signal's listener goes with its last watcher. */
export function unwatch(signal: AbortSignal, w: Watcher) {
  const entry = watches.get(signal);
  if (!entry || !entry.watchers.delete(w) || entry.watchers.size > 0) return;
  watches.delete(signal);
  signal.removeEventListener("abort", entry.onAbort);
}
