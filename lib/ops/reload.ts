/**
 * Reload (SIGHUP): read and check the whole new configuration first, then
 * swap it in at once, or keep the old one. The loading itself (which files,
 * which flags) is the caller's; this module makes it atomic, one at a time,
 * and says in one line what happened.
 *
 * @module
 */

/**
 * What {@linkcode createReloader} needs.
 *
 * @example
 * ```ts
 * import type { ReloadSteps, RulesOptions, SocksServer } from "@edgesocks/edgesocks";
 * declare const server: SocksServer;
 * declare function readRules(): Promise<RulesOptions>;
 * const steps: ReloadSteps<RulesOptions> = {
 *   load: readRules,
 *   apply: (rules) => server.update(rules),
 *   report: (line, ok) => (ok ? console.log : console.error)(line),
 * };
 * ```
 */
export interface ReloadSteps<T> {
  /** Reads and checks everything; throws (with a message for the user) when anything is wrong. */
  load(): Promise<T>;
  /** Puts a loaded configuration in force (e.g. `SocksServer.update`). Called only with a whole one. */
  apply(config: T): void;
  /** One line for the user: what was reloaded, or why the old configuration stays. */
  report(line: string, ok: boolean): void;
  /** Describes a loaded configuration for the success line, e.g. `2 users, 3 destination rules`. */
  describe?(config: T): string;
}

/**
 * Reloads done so far, by result.
 *
 * @example
 * ```ts
 * import { createReloader, type ReloadCounts } from "@edgesocks/edgesocks";
 * const reload = createReloader({ load: async () => 1, apply: () => {}, report: () => {} });
 * const counts: ReloadCounts = reload.counts; // { ok: 0, failed: 0 } until the first reload
 * ```
 */
export interface ReloadCounts {
  /** Reloads that put a new configuration in force. */
  ok: number;
  /** Reloads that failed and kept the old one. */
  failed: number;
}

/**
 * Returns `reload()`, which loads, then applies or keeps the old
 * configuration, and resolves true when the new one is in force. Reloads run
 * one at a time: one asked for while another runs starts when it is done
 * (several asked for meanwhile make one), so the last file written is the
 * one in force.
 *
 * @example
 * ```ts
 * import { createReloader, type RulesOptions, type SocksServer } from "@edgesocks/edgesocks";
 * declare const server: SocksServer;
 * declare function readRules(): Promise<RulesOptions>;
 * const reload = createReloader({
 *   load: readRules,
 *   apply: (rules) => server.update(rules),
 *   report: (line) => console.error(line),
 * });
 * await reload(); // e.g. on SIGHUP
 * ```
 */
export function createReloader<T>(
  steps: ReloadSteps<T>,
): (() => Promise<boolean>) & { readonly counts: ReloadCounts } {
  const counts: ReloadCounts = { ok: 0, failed: 0 };
  let running: Promise<boolean> | undefined;
  let again: Promise<boolean> | undefined;
  const once = async (): Promise<boolean> => {
    let config: T;
    try {
      config = await steps.load();
      // Applying may refuse it too (a rule the server cannot take): both read the same.
      steps.apply(config);
    } catch (error) {
      counts.failed++;
      steps.report(
        `reload failed, keeping the old configuration: ${
          error instanceof Error ? error.message : String(error)
        }`,
        false,
      );
      return false;
    }
    counts.ok++;
    const what = steps.describe?.(config);
    steps.report(`reloaded${what ? `: ${what}` : ""}`, true);
    return true;
  };
  const reload = (): Promise<boolean> => {
    if (!running) {
      running = once().finally(() => (running = undefined));
      return running;
    }
    again ??= running.then(() => {
      again = undefined;
      return reload();
    });
    return again;
  };
  return Object.assign(reload, { counts });
}
