// A real Tor as the upstream, in a network namespace of the test's own that has only loopback (so
// nothing can leave the machine): Tor, edgesocks and the clients all run in it. Tor builds no circuit
// there, but its control port reports each SOCKS request as a STREAM NEW event with the SOCKS user
// name and password it was given: what Tor's IsolateSOCKSAuth keeps circuits apart by.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, runtimeCommand } from "./_fixtures.ts";

// Runs in the namespace: starts Tor and edgesocks, listens to STREAM events, runs the clients, prints
// the events as JSON lines. Every wait is bounded.
const ORCHESTRATE = String.raw`
import json, os, signal, socket, subprocess, sys, threading, time
d, proxy = sys.argv[1], json.loads(sys.argv[2])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
def wait_port(port, s=20):
    end = time.time() + s
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("nothing listens on %d" % port)
with open(d + "/torrc", "w") as f:
    f.write("SocksPort 127.0.0.1:9050\nControlPort 127.0.0.1:9051\nDataDirectory %s/data\n"
            "Log notice file %s/tor.log\nClientUseIPv6 0\n" % (d, d))
os.mkdir(d + "/data", 0o700)
tor = subprocess.Popen(["tor", "-f", d + "/torrc"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
procs = [tor]
events = []
try:
    wait_port(9051)
    ctl = socket.create_connection(("127.0.0.1", 9051), timeout=30)
    f = ctl.makefile("rwb")
    def cmd(c):
        f.write((c + "\r\n").encode()); f.flush()
        return f.readline().decode().strip()
    assert cmd("AUTHENTICATE").startswith("250"), "control auth"
    assert cmd("SETEVENTS STREAM").startswith("250"), "setevents"
    def reader():
        for line in f:
            events.append(line.decode("latin-1").rstrip("\r\n"))
    threading.Thread(target=reader, daemon=True).start()
    wait_port(9050)
    es = subprocess.Popen(proxy + ["--listen", "127.0.0.1:1080", "--upstream", "tor=socks5h://127.0.0.1:9050?tor",
                                   "--route", "*=tor", "--upstream-auth", "passthrough", "--connect-timeout", "3"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    procs.append(es)
    wait_port(1080, 30)
    clients = [
        ["curl", "-sS", "-m", "4", "--socks5-hostname", "127.0.0.1:1080", "-U", "<torS0X>0:key-one", "http://example.com/"],
        ["curl", "-sS", "-m", "4", "--socks5-hostname", "127.0.0.1:1080", "-U", "alice:pw-two", "http://example.org/"],
        ["curl", "-sS", "-m", "4", "--socks5-hostname", "127.0.0.1:1080", "http://example.net/"],
        ["tor-resolve", "-5", "resolve.example", "127.0.0.1:1080"],
    ]
    codes = [subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=15).returncode for c in clients]
    end = time.time() + 10
    while time.time() < end and sum((" NEW 0 " in e and "PURPOSE=USER" in e) or " NEWRESOLVE " in e for e in events) < 4:
        time.sleep(0.2)
    print(json.dumps({"codes": codes, "events": events}))
finally:
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
`;

describe("chaining: Tor in a loopback-only network namespace", () => {
  it("STREAM NEW events show the SOCKS user name and password edgesocks passed through, RESOLVE included", async () => {
    const dir = mkdtempSync(join(tmpdir(), "edgesocks-tor-"));
    try {
      writeFileSync(join(dir, "orchestrate.py"), ORCHESTRATE);
      const { cmd, args } = runtimeCommand();
      const r = await run(
        "unshare",
        ["-n", "/usr/bin/python3", join(dir, "orchestrate.py"), dir, JSON.stringify([cmd, ...args])],
        { timeoutMs: 90_000 },
      );
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const { events } = JSON.parse(r.stdout.trim().split("\n").pop()!) as {
        codes: number[];
        events: string[];
      };
      const news = events.filter((e) => / NEW(RESOLVE)? 0 /.test(e) && !/PURPOSE=DIR_FETCH/.test(e));
      const of = (target: string) => news.find((e) => e.includes(` NEW 0 ${target} `));
      const first = of("example.com:80"), second = of("example.org:80"), third = of("example.net:80");
      assert.ok(first && second && third, news.join("\n"));
      // Byte for byte, Tor's <torS0X> prefix intact.
      assert.match(first, / SOCKS_USERNAME="<torS0X>0" SOCKS_PASSWORD="key-one" /);
      assert.match(second, / SOCKS_USERNAME="alice" SOCKS_PASSWORD="pw-two" /);
      assert.match(first, /CLIENT_PROTOCOL=SOCKS5/);
      // A client that gave none: none go on (and the URL has none).
      assert.doesNotMatch(third, / SOCKS_USERNAME=/);
      // RESOLVE went to Tor, not to a resolver here.
      const resolve = news.find((e) => e.includes(" NEWRESOLVE 0 resolve.example:0 "));
      assert.ok(resolve, news.join("\n"));
      assert.match(resolve, /PURPOSE=DNS_REQUEST/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
