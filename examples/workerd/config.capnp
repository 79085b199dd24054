# edgesocks on workerd: SOCKS4 / SOCKS4A / SOCKS5 on a raw TCP socket.
#   npm run build:workerd                      (writes examples/workerd/edgesocks.js, which this embeds)
#   EDGESOCKS_USERS="$(cat users.txt)" node_modules/.bin/workerd serve examples/workerd/config.capnp
# The bindings the worker reads are in the README ("At the edge"); unset ones take the defaults.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "edgesocks", worker = .edgesocks),
    # Where tunnels may go. workerd resolves names itself and checks the address it dialled against
    # this list: "public" refuses loopback, private, link-local and other special-purpose ranges, so a
    # name that resolves to 127.0.0.1 is refused here, after DNS.
    (name = "internet", network = (allow = ["public"])),
  ],
  sockets = [
    # Override the address with `--socket-addr socks=HOST:PORT`.
    (name = "socks", address = "127.0.0.1:1080", tcp = (), service = "edgesocks"),
  ],
);

const edgesocks :Workerd.Worker = (
  modules = [(name = "edgesocks.js", esModule = embed "edgesocks.js")],
  compatibilityDate = "2026-11-01",
  globalOutbound = "internet",
  bindings = [
    # user:password lines; from the environment, so that no password sits in the config. Unset: no login.
    (name = "EDGESOCKS_USERS", fromEnvironment = "EDGESOCKS_USERS"),
    (name = "EDGESOCKS_IDLE_TIMEOUT", text = "300"),
    # RESOLVE / RESOLVE_PTR over DNS-over-HTTPS; without it both answer "command not supported".
    # (name = "EDGESOCKS_DOH", text = "https://cloudflare-dns.com/dns-query"),
  ],
);
