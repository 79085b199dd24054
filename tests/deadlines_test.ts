/**
 * The deadline lists the sessions' handshake and connect timeouts share
 * (lib/_deadlines.ts): entries of one duration fire in the order they were
 * added, at their deadline and not before; one taken out never fires; a move
 * starts its duration again; an entry added while the list expires others
 * fires too. (The timeouts themselves, through real TCP: server_test.ts.)
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type DeadlineEntry, DeadlineList } from "../lib/_deadlines.ts";
import { sleep } from "./_fixtures.ts";

/** An entry that notes when (ms after `t0`) it expired, in `log`. */
function entry(name: string, log: [string, number][], t0: number, then?: () => void): DeadlineEntry {
  return {
    list: null,
    at: 0,
    prev: null,
    next: null,
    expire() {
      log.push([name, performance.now() - t0]);
      then?.();
    },
  };
}

async function until(what: string, ok: () => boolean, ms = 5_000): Promise<void> {
  for (const t0 = Date.now(); !ok(); await sleep(5)) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
  }
}

describe("deadline lists", () => {
  it("fire in order at the deadline, never before; a removed entry never fires", async () => {
    const log: [string, number][] = [];
    const t0 = performance.now();
    const a = entry("a", log, t0), b = entry("b", log, t0), c = entry("c", log, t0);
    DeadlineList.add(a, 150);
    await sleep(30);
    DeadlineList.add(b, 150);
    DeadlineList.add(c, 150);
    DeadlineList.remove(b);
    assert.equal(b.list, null);
    await until("a and c", () => log.length === 2);
    await sleep(100);
    assert.deepEqual(log.map(([name]) => name), ["a", "c"]);
    assert.ok(log[0][1] >= 149, `a after ${log[0][1]} ms`);
    assert.ok(log[1][1] >= 179, `c after ${log[1][1]} ms`);
    assert.equal(a.list, null);
  });

  it("a move starts the duration again; a move to another duration changes lists", async () => {
    const log: [string, number][] = [];
    const t0 = performance.now();
    const a = entry("a", log, t0), b = entry("b", log, t0);
    DeadlineList.add(a, 100);
    DeadlineList.add(b, 100);
    await sleep(60);
    DeadlineList.move(a, 100); // now due at 160, after b
    DeadlineList.move(b, 40); // another list: due at about 100
    await until("both", () => log.length === 2);
    assert.deepEqual(log.map(([name]) => name), ["b", "a"]);
    assert.ok(log[1][1] >= 159, `a after ${log[1][1]} ms`);
  });

  it("an entry added to the same duration while others expire fires too", async () => {
    const log: [string, number][] = [];
    const t0 = performance.now();
    const again = entry("again", log, t0);
    const first = entry("first", log, t0, () => DeadlineList.add(again, 50));
    DeadlineList.add(first, 50);
    await until("both", () => log.length === 2);
    assert.deepEqual(log.map(([name]) => name), ["first", "again"]);
    assert.ok(log[1][1] >= 99, `again after ${log[1][1]} ms`);
  });
});
