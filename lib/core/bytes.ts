/**
 * Byte helpers shared by the core, the adapters and the supervisor.
 *
 * @module
 */

/** `a` followed by `b`, in a new array. */
export function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Whether `chunk` spans all of its ArrayBuffer (a buffer of its own, not a slice of a pool or of a bigger read). */
export function spansBuffer(chunk: Uint8Array): boolean {
  return chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength;
}

/** `ArrayBuffer.prototype.transfer` (ES2024: Node 21+, Bun, Deno), where the runtime has it. */
const canTransfer = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === "function";

/**
 * Frees `buffer`'s memory now instead of at the next garbage collection, by detaching it
 * (`transfer(0)`), where the runtime can: every view of it reads as empty afterwards, so only for a
 * buffer nothing uses any more.
 */
export function freeBuffer(buffer: ArrayBufferLike): void {
  const ab = buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer; detached?: boolean };
  if (canTransfer && !ab.detached) ab.transfer!(0);
}
