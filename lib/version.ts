/**
 * The edgesocks version (kept equal to deno.json and package.json by a test).
 *
 * @example
 * ```ts
 * import { VERSION } from "@edgesocks/edgesocks";
 * console.log(`edgesocks ${VERSION}`); // "edgesocks 0.1.0"
 * ```
 */
export const VERSION = "0.1.0";
