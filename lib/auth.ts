/**
 * RFC 1929 credentials: parsing the users file and checking in constant time.
 *
 * @module
 */

const encoder = new TextEncoder();

/**
 * Parses a users file: one `user:password` per line, split at the FIRST colon
 * (so passwords may hold colons and spaces). Blank lines and lines starting
 * with `#` are skipped; a trailing CR is dropped. Throws on a line without a
 * colon, an empty user or password, or a field longer than 255 bytes (RFC 1929).
 *
 * @example
 * ```ts
 * import { parseUsers } from "@edgesocks/edgesocks";
 * parseUsers("alice:correct horse:battery\n"); // Map { "alice" => "correct horse:battery" }
 * ```
 */
export function parseUsers(text: string): Map<string, string> {
  const users = new Map<string, string>();
  text.split("\n").forEach((raw, i) => {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "" || line.startsWith("#")) return;
    const colon = line.indexOf(":");
    const user = colon < 0 ? "" : line.slice(0, colon);
    const password = colon < 0 ? "" : line.slice(colon + 1);
    if (!user || !password) throw new TypeError(`users file line ${i + 1}: expected user:password`);
    if (encoder.encode(user).length > 255 || encoder.encode(password).length > 255) {
      throw new TypeError(`users file line ${i + 1}: user and password must be at most 255 bytes`);
    }
    users.set(user, password);
  });
  return users;
}

/** Compares two byte strings in time that depends only on their lengths' maximum. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  const n = Math.max(a.length, b.length);
  let diff = a.length ^ b.length;
  for (let i = 0; i < n; i++) diff |= (a[i % (a.length || 1)] ?? 0) ^ (b[i % (b.length || 1)] ?? 0);
  return diff === 0;
}

function decodeLatin1(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

/**
 * Builds the `authenticate` callback for the state machine from a user map.
 * Passwords are compared in constant time; an unknown user is compared
 * against a dummy so the timing does not tell which part was wrong.
 *
 * @example
 * ```ts
 * import { createAuthenticator } from "@edgesocks/edgesocks";
 * const authenticate = createAuthenticator(new Map([["alice", "secret"]]));
 * const bytes = (s: string) => new TextEncoder().encode(s);
 * authenticate(bytes("alice"), bytes("secret")); // true
 * ```
 */
export function createAuthenticator(
  users: ReadonlyMap<string, string>,
): (user: Uint8Array, password: Uint8Array) => boolean {
  // Keyed by the user name's bytes (as latin1 text) so any UTF-8 name matches byte for byte.
  const table = new Map<string, Uint8Array>();
  for (const [user, password] of users) {
    table.set(decodeLatin1(encoder.encode(user)), encoder.encode(password));
  }
  const dummy = new Uint8Array(32);
  return (user, password) => {
    const expected = table.get(decodeLatin1(user));
    const ok = constantTimeEqual(password, expected ?? dummy);
    return ok && expected !== undefined;
  };
}
