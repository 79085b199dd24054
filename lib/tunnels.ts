/**
 * Folded into `relay.ts` (the Tunnel bookkeeping) and its private
 * `_tunnels.ts` (the shared idle lists and shutdown watches). Kept only until
 * `session.ts` imports `watch` and `unwatch` from `./relay.ts`; then delete it.
 *
 * @module
 */
export { unwatch, watch, type Watcher } from "./relay.ts";
