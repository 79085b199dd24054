/**
 * The host's interface addresses through `node:os`, for the Node and Bun
 * adapters (the default policy refuses them as destinations).
 *
 * @module
 */
import { networkInterfaces } from "node:os";

/**
 * Every address of every interface, as text (no zone index).
 *
 * @example
 * ```ts
 * import { nodeInterfaceAddresses } from "./_interfaces.ts";
 * nodeInterfaceAddresses().includes("127.0.0.1"); // true on any host with a loopback interface
 * ```
 */
export function nodeInterfaceAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((list) =>
    (list ?? []).map((i) => i.address.split("%")[0])
  );
}
