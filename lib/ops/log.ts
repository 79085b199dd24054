/**
 * Formatting of per-connection log lines. Credentials never reach here: a
 * {@linkcode ConnectionLog} has no password field.
 *
 * @module
 */
import type { ConnectionLog } from "../record.ts";

/** Log output modes of the CLI. */
export type LogMode = "text" | "json" | "quiet";

/** One JSON object per line, with a timestamp. */
export function formatJson(entry: ConnectionLog, now: Date = new Date()): string {
  return JSON.stringify({ time: now.toISOString(), ...entry });
}

/** One human-readable line: client, command, target, outcome, bytes each way, duration. */
export function formatText(entry: ConnectionLog, now: Date = new Date()): string {
  const parts = [now.toISOString(), entry.client ?? "-"];
  const protocol = entry.protocol === "http" ? "http" : entry.version ? `socks${entry.version}` : "-";
  parts.push(protocol, entry.command ?? "-", entry.target ?? "-");
  if (entry.dialed) parts.push(`via=${entry.dialed}`);
  if (entry.user !== undefined) parts.push(`user=${JSON.stringify(entry.user)}`);
  if (entry.status !== undefined) parts.push(`status=${entry.status}`);
  parts.push(
    `reply=${entry.reply}`,
    `outcome=${entry.outcome}`,
    `up=${entry.up}`,
    `down=${entry.down}`,
    `ms=${entry.durationMs}`,
  );
  parts.push(`reason=${JSON.stringify(entry.reason)}`);
  return parts.join(" ");
}

/** Returns a log hook writing lines through `write`, or undefined for quiet. */
export function createLogger(
  mode: LogMode,
  write: (line: string) => void,
): ((e: ConnectionLog) => void) | undefined {
  if (mode === "quiet") return undefined;
  const format = mode === "json" ? formatJson : formatText;
  return (entry) => write(format(entry));
}
