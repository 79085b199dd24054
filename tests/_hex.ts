/**
 * Protocol-shaped byte literals for the core tests: `hex("05 03 08 'web.test' 0050")`.
 * Hex digit pairs (whitespace ignored) and 'single-quoted ASCII'. Anything else
 * throws, so a typo in a test cannot silently become different bytes.
 */

/** Bytes from hex pairs and 'quoted ASCII'; long runs are spelled with {@linkcode repeat}. */
export function hex(text: string): Uint8Array {
  const out: number[] = [];
  let digits = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated quote in ${JSON.stringify(text)}`);
      out.push(...pairs(digits));
      digits = "";
      for (let j = i + 1; j < end; j++) out.push(text.charCodeAt(j));
      i = end;
    } else if (/[0-9a-fA-F]/.test(c)) {
      digits += c;
    } else if (!/\s/.test(c)) {
      throw new Error(`bad character ${JSON.stringify(c)} in ${JSON.stringify(text)}`);
    }
  }
  out.push(...pairs(digits));
  return Uint8Array.from(out);
}

function pairs(digits: string): number[] {
  if (digits.length % 2) throw new Error(`odd number of hex digits: ${digits}`);
  const out: number[] = [];
  for (let i = 0; i < digits.length; i += 2) out.push(parseInt(digits.slice(i, i + 2), 16));
  return out;
}

/** Formats bytes as "05 01 00" (lower case, one space between bytes). */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/** `count` copies of `byte`, as a hex string to splice into {@linkcode hex}. */
export function repeat(byte: number, count: number): string {
  return byte.toString(16).padStart(2, "0").repeat(count);
}

/** Concatenates byte arrays (or plain arrays of byte values). */
export function concat(...parts: ArrayLike<number>[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
