/**
 * The timers and shutdown listeners that relayed tunnels share, so that an
 * idle tunnel holds no timer, closure or listener of its own: the tunnels
 * with the same idle timeout share one list and one timer, the watchers of
 * one shutdown signal share one listener. Private to `relay.ts`, which
 * builds the Tunnel bookkeeping on them and passes the shutdown watch on to
 * the driver.
 *
 * Who owns the registries: each class its own, as a private static map, and
 * an entry lives exactly as long as it has members (an idle list goes with
 * its last tunnel, a watch with its last watcher). They are keyed by what is
 * actually shared. Idle lists by their timeout, process-wide: two servers
 * with the same idle timeout gain nothing from two timers, and a tunnel needs
 * no server identity to time out. Watches by their signal: the signal is the
 * one thing a server's driver and its relays have in common (the relay
 * options are made per tunnel, so nothing can hang on them).
 *
 * @module
 */

/**
 * A relayed tunnel as the shared idle lists and signal watches see it: its
 * links in an idle list, its last activity, and how to stop it.
 *
 * @example
 * ```ts
 * import type { TrackedTunnel } from "./_tunnels.ts";
 * const t: TrackedTunnel = { idle: null, last: 0, prev: null, next: null, stop: (end) => console.log(end) };
 * ```
 */
export interface TrackedTunnel {
  /** The idle list the tunnel is in, if any. */
  idle: IdleList | null;
  /** `Date.now()` of its last activity. */
  last: number;
  /** The tunnel active just before it, in its idle list. */
  prev: TrackedTunnel | null;
  /** The tunnel active just after it, in its idle list. */
  next: TrackedTunnel | null;
  /** Closes both sides; called once for "idle" or "aborted". */
  stop(end: "idle" | "aborted"): void;
}

/**
 * The tunnels that share one idle timeout, least recently active first, in a
 * list threaded through the tunnels themselves: one timer for them all, not a
 * timer and its closure per tunnel. Bytes moving put a tunnel at the end.
 *
 * @example
 * ```ts
 * import { IdleList, type TrackedTunnel } from "./_tunnels.ts";
 * const t: TrackedTunnel = { idle: null, last: 0, prev: null, next: null, stop: (end) => console.log(end) };
 * IdleList.of(300_000).add(t); // "idle" once 300 s pass without a touch
 * t.idle?.touch(t); // bytes moved
 * t.idle?.remove(t); // the tunnel ended
 * ```
 */
export class IdleList {
  /** One list per idle timeout in use (a server has one). */
  static #lists = new Map<number, IdleList>();

  /** The list of the tunnels whose idle timeout is `ms`. */
  static of(ms: number): IdleList {
    let list = IdleList.#lists.get(ms);
    if (!list) IdleList.#lists.set(ms, list = new IdleList(ms));
    return list;
  }

  /** The idle timeout, in milliseconds. */
  readonly ms: number;
  /** The least recently active tunnel. */
  head: TrackedTunnel | null = null;
  /** The most recently active tunnel. */
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

  private constructor(ms: number) {
    this.ms = ms;
  }

  /** Adds `t`, active now. */
  add(t: TrackedTunnel): void {
    t.idle = this;
    t.last = Date.now();
    this.#append(t);
    this.#timer ??= setTimeout(this.#expire, this.ms);
  }

  /** Marks `t` active now. */
  touch(t: TrackedTunnel): void {
    t.last = Date.now();
    if (t === this.tail) return;
    this.#unlink(t);
    this.#append(t);
  }

  /** Takes `t` out; the list goes (timer and all) with its last tunnel. */
  remove(t: TrackedTunnel): void {
    if (t.idle !== this) return;
    t.idle = null;
    this.#unlink(t);
    if (this.head) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    IdleList.#lists.delete(this.ms);
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

/**
 * What a shutdown signal stops: a tunnel (its `stop("aborted")`) or any
 * callback (the driver's handshake and connect phases).
 *
 * @example
 * ```ts
 * import type { Watcher } from "./_tunnels.ts";
 * const callback: Watcher = () => console.log("shutting down");
 * const tunnel: Watcher = { stop: (end) => console.log(end) }; // "aborted"
 * ```
 */
export type Watcher = (() => void) | { stop(end: "aborted"): void };

/**
 * The watchers of one shutdown signal, and the one listener that calls them:
 * one listener per signal in use, not one per connection, so adding and
 * removing a watcher costs the same with 10 or 10,000 connections open,
 * where an `EventTarget` searches its list to remove a listener.
 *
 * @example
 * ```ts
 * import { ShutdownWatch } from "./_tunnels.ts";
 * const shutdown = new AbortController();
 * const onShutdown = () => console.log("closing");
 * ShutdownWatch.add(shutdown.signal, onShutdown);
 * shutdown.abort(); // "closing"; or, had the connection ended first:
 * ShutdownWatch.remove(shutdown.signal, onShutdown);
 * ```
 */
export class ShutdownWatch {
  /** One watch per signal with watchers. */
  static #watches = new Map<AbortSignal, ShutdownWatch>();

  /** Calls `w` when `signal` aborts (the caller checks `signal.aborted` first). */
  static add(signal: AbortSignal, w: Watcher): void {
    let watch = ShutdownWatch.#watches.get(signal);
    if (!watch) {
      ShutdownWatch.#watches.set(signal, watch = new ShutdownWatch(signal));
      signal.addEventListener("abort", watch.#onAbort, { once: true });
    }
    watch.#watchers.add(w);
  }

  /** Stops watching; the signal's listener goes with its last watcher. */
  static remove(signal: AbortSignal, w: Watcher): void {
    const watch = ShutdownWatch.#watches.get(signal);
    if (!watch || !watch.#watchers.delete(w) || watch.#watchers.size > 0) return;
    ShutdownWatch.#watches.delete(signal);
    signal.removeEventListener("abort", watch.#onAbort);
  }

  #signal: AbortSignal;
  #watchers = new Set<Watcher>();
  #onAbort = () => {
    ShutdownWatch.#watches.delete(this.#signal);
    for (const x of this.#watchers) {
      if (typeof x === "function") x();
      else x.stop("aborted");
    }
  };

  private constructor(signal: AbortSignal) {
    this.#signal = signal;
  }
}
