/**
 * Telling that the process is out of file descriptors where the runtime's
 * listener does not say (measured, Node 24 and Bun 1.4 under `ulimit -n 64`):
 * Node's libuv accepts each new connection with a reserve descriptor and
 * closes it at once, and Bun leaves new connections in the listen queue
 * (using CPU while it retries); neither tells JavaScript. So the Node and Bun
 * adapters probe: a descriptor opened and closed again (`/dev/null`), every
 * second while a listener is open, and at once after a failed dial that may
 * have been out of descriptors. A probe that fails with EMFILE or ENFILE is
 * reported to every open listener's `onAcceptError`.
 *
 * @module
 */
import { closeSync, openSync } from "node:fs";
import { clearInterval, setInterval } from "node:timers";

/** How often an open listener probes. */
const PROBE_MS = 1_000;

/** The probe: undefined while a descriptor can still be opened, else its errno code. */
function outOfDescriptors(): "EMFILE" | "ENFILE" | undefined {
  try {
    closeSync(openSync("/dev/null", "r"));
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === "EMFILE" || code === "ENFILE") return code;
    // Anything else (no /dev/null: not a Unix) says nothing about descriptors.
  }
  return undefined;
}

/**
 * Probes for one adapter: `watch()` per listener, `check()` after a failed
 * dial.
 *
 * @example
 * ```ts
 * import { DescriptorProbe } from "./_fd_probe.ts";
 * const probe = new DescriptorProbe("new connections are closed at once");
 * const unwatch = probe.watch((error) => console.error(error));
 * probe.check(); // after a dial failed with EMFILE: "EMFILE" while still out of descriptors
 * unwatch(); // the listener closed
 * ```
 */
export class DescriptorProbe {
  readonly #effect: string;
  readonly #listeners = new Set<(error: Error) => void>();
  #timer: ReturnType<typeof setInterval> | undefined;

  /** `effect`: what the runtime does with new connections meanwhile, for the error's message. */
  constructor(effect: string) {
    this.#effect = effect;
  }

  /** Reports to `onAcceptError` from now on; returns the function that stops it. */
  watch(onAcceptError: (error: Error) => void): () => void {
    const listener = (error: Error) => onAcceptError(error);
    this.#listeners.add(listener);
    if (!this.#timer) {
      this.#timer = setInterval(() => this.check(), PROBE_MS);
      (this.#timer as { unref?: () => void }).unref?.();
    }
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0 && this.#timer) {
        clearInterval(this.#timer);
        this.#timer = undefined;
      }
    };
  }

  /**
   * Probes now, reporting to every open listener when out of descriptors;
   * returns the errno code then (EMFILE, ENFILE), else undefined.
   */
  check(): "EMFILE" | "ENFILE" | undefined {
    const code = outOfDescriptors();
    if (!code) return undefined;
    const words = code === "EMFILE" ? "too many open files" : "too many open files in the system";
    const error = Object.assign(new Error(`${code}: ${words}; ${this.#effect}`), { code });
    for (const listener of this.#listeners) listener(error);
    return code;
  }
}
