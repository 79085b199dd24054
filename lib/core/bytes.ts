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

/**
 * The next read size of a buffer that grows and shrinks with the traffic: doubled (up to `max`) after a
 * read of `n` bytes that filled the `size` it had, halved (down to `min`) after one that used less than half.
 */
export function nextReadSize(size: number, n: number, min: number, max: number): number {
  if (n === size) return Math.min(size * 2, max);
  if (n < size / 2) return Math.max(size / 2, min);
  return size;
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
