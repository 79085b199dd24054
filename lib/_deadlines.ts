/**
 * Deadlines that connections share: one list and one timer per duration, in
 * place of a timer (and its closure) per connection and phase, as the
 * session's handshake and connect timeouts had. Entries join a list in the
 * order they start, so a list of one duration is ordered by deadline: adding,
 * moving and removing one are a few field writes, and the list's one timer is
 * set for its first deadline. A list goes (timer and all) with its last entry.
 *
 * The clock is `performance.now()`, monotonic as the runtimes' timers are: a
 * wall clock stepped back would hold every deadline off by as much.
 *
 * @module
 */

/**
 * What a deadline list holds: its links, its deadline, and what to do then.
 *
 * @example
 * ```ts
 * import type { DeadlineEntry } from "./_deadlines.ts";
 * const e: DeadlineEntry = { list: null, at: 0, prev: null, next: null, expire: () => console.log("late") };
 * ```
 */
export interface DeadlineEntry {
  /** The list it is in, if any. */
  list: DeadlineList | null;
  /** Its deadline, on the `performance.now()` clock. */
  at: number;
  /** The entry due just before it. */
  prev: DeadlineEntry | null;
  /** The entry due just after it. */
  next: DeadlineEntry | null;
  /** Called once at the deadline, after the entry has left its list. */
  expire(): void;
}

/**
 * The entries with one duration, process-wide (two servers with the same
 * timeout gain nothing from two timers).
 *
 * @example
 * ```ts
 * import { DeadlineList } from "./_deadlines.ts";
 * const e = { list: null, at: 0, prev: null, next: null, expire: () => console.log("timed out") };
 * DeadlineList.add(e, 10_000);
 * DeadlineList.remove(e); // done in time
 * ```
 */
export class DeadlineList {
  static #lists = new Map<number, DeadlineList>();

  /** Adds `e` (in no list), due `ms` from now. */
  static add(e: DeadlineEntry, ms: number): void {
    let list = DeadlineList.#lists.get(ms);
    if (!list) DeadlineList.#lists.set(ms, list = new DeadlineList(ms));
    list.#add(e, performance.now());
  }

  /** Makes `e` due `ms` from now, in whatever list it was (a move within one list keeps its timer). */
  static move(e: DeadlineEntry, ms: number): void {
    const list = e.list;
    if (list === null || list.ms !== ms) {
      DeadlineList.remove(e);
      return DeadlineList.add(e, ms);
    }
    list.#unlink(e);
    list.#append(e, performance.now());
  }

  /** Takes `e` out of its list, if it is in one. */
  static remove(e: DeadlineEntry): void {
    const list = e.list;
    if (list === null) return;
    list.#unlink(e);
    e.list = null;
    if (list.#head) return;
    clearTimeout(list.#timer);
    list.#timer = undefined;
    DeadlineList.#lists.delete(list.ms);
  }

  /** The duration, in milliseconds. */
  readonly ms: number;
  #head: DeadlineEntry | null = null;
  #tail: DeadlineEntry | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #expire = () => {
    this.#timer = undefined;
    const now = performance.now();
    for (let e = this.#head; e && e.at <= now; e = this.#head) {
      DeadlineList.remove(e);
      e.expire();
    }
    // (The last removal above deleted this list, unless an expire() added to it again.)
    if (this.#head && this.#timer === undefined) {
      this.#timer = setTimeout(this.#expire, Math.max(0, this.#head.at - now));
    }
  };

  private constructor(ms: number) {
    this.ms = ms;
  }

  #add(e: DeadlineEntry, now: number) {
    e.list = this;
    this.#append(e, now);
    this.#timer ??= setTimeout(this.#expire, this.ms);
  }

  #append(e: DeadlineEntry, now: number) {
    e.at = now + this.ms;
    e.prev = this.#tail;
    e.next = null;
    if (this.#tail) this.#tail.next = e;
    else this.#head = e;
    this.#tail = e;
  }

  #unlink(e: DeadlineEntry) {
    if (e.prev) e.prev.next = e.next;
    else this.#head = e.next;
    if (e.next) e.next.prev = e.prev;
    else this.#tail = e.prev;
    e.prev = e.next = null;
  }
}
