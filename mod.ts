/**
 * edgesocks: a SOCKS4 / SOCKS4A / SOCKS5 proxy with Tor's extensions, for
 * Deno, Bun and Node.
 *
 * Importing this module starts nothing and loads no runtime adapter; run it
 * as a program (`deno run -A mod.ts`, `bun mod.ts`, `node mod.ts`) to start
 * the proxy.
 *
 * @example
 * ```ts
 * import { serve } from "@edgesocks/edgesocks";
 * import { nodeAdapter } from "@edgesocks/edgesocks/node";
 * const server = await serve(nodeAdapter, { listen: [{ host: "127.0.0.1", port: 1080 }] });
 * ```
 *
 * @module
 */
export { DEFAULT_COMMANDS, SocksServerMachine } from "./lib/core/socks_server.ts";
export type {
  DefaultRequestKind,
  MachineOptions,
  SocksRequest,
  SocksState,
} from "./lib/core/socks_server.ts";
export type {
  Action,
  Answer,
  CloseCode,
  Protocol,
  ProxyRequest,
  RequestKind,
  RequestMachine,
  Step,
} from "./lib/core/request.ts";
export { REQUEST_KINDS } from "./lib/core/request.ts";
export { HTTP_MAX_HEAD, HttpConnectMachine, type HttpConnectOptions } from "./lib/core/http_connect.ts";
export { SniffingMachine, type SniffingOptions } from "./lib/core/sniff.ts";
export {
  AddressType,
  AuthMethod,
  Limits,
  ReplyCode,
  Socks4ReplyCode,
  SocksCommand,
  TorReplyCode,
} from "./lib/core/wire.ts";
export { canonicalIP, type HostType, type SocksAddress } from "./lib/core/address.ts";
export { replyCodeOf, SocksError } from "./lib/core/errors.ts";
export type {
  ByteConnection,
  DialOptions,
  HostPort,
  Listener,
  ListenOptions,
  NativeRelay,
  Resolver,
  RuntimeAdapter,
  UnixListener,
  WebSocketConnectOptions,
  WebSocketServeOptions,
} from "./lib/runtime.ts";
export { type ByteStreamPair, fromWebStreams } from "./lib/streams.ts";
export {
  admitWebSocket,
  DEFAULT_READ_COALESCE,
  DEFAULT_RECEIVE_LIMIT,
  DEFAULT_RECEIVE_PAUSE,
  DEFAULT_SEND_HIGH_WATER,
  fromWebSocket,
  normalCloseCode,
  refusalResponse,
  tokenProtocol,
  WEBSOCKET_PROTOCOL,
  WEBSOCKET_TOKEN_PREFIX,
  type WebSocketAdmission,
  WebSocketClose,
  WebSocketClosedError,
  type WebSocketConnection,
  webSocketConnection,
  type WebSocketConnectionOptions,
  type WebSocketLike,
  type WebSocketPeer,
} from "./lib/ingress/websocket.ts";
export { relay, type RelayOptions, type RelayResult } from "./lib/relay.ts";
export { type ConnectionHandler, createHandler, type HandlerOptions } from "./lib/session.ts";
export type { ConnectionLog, ConnectionRecord, Outcome } from "./lib/record.ts";
export { DEFAULT_TIMEOUTS, makeRules, type Rules, type RulesOptions, type Timeouts } from "./lib/rules.ts";
export type { CommandContext, CommandHandler, CommandResult } from "./lib/commands.ts";
export { type Binding, type Opened, type Upstream, UpstreamError } from "./lib/upstream/upstream.ts";
export { directBind, type OpenListener } from "./lib/upstream/bind.ts";
export { directUpstream } from "./lib/upstream/direct.ts";
export { byNameUpstream } from "./lib/upstream/by_name.ts";
export { type DohOptions, dohResolver } from "./lib/upstream/doh.ts";
export { type Hop, type HopProtocol, parseHop } from "./lib/upstream/hop.ts";
export { type HopOptions, type HopUpstream, socksUpstream } from "./lib/upstream/socks5.ts";
export { httpStatusReply, httpUpstream } from "./lib/upstream/http.ts";
export { type ChainOptions, chainUpstream, parseRoute, type Route } from "./lib/upstream/route.ts";
export {
  type SocksClientAction,
  type SocksClientFailure,
  SocksClientMachine,
  type SocksClientProtocol,
  type SocksClientRequest,
  type SocksClientStep,
} from "./lib/core/socks_client.ts";
export {
  DEFAULT_DRAIN_TIMEOUT,
  DEFAULT_LISTEN,
  DEFAULT_MAX_CONNECTIONS,
  type DrainResult,
  type ListenAddress,
  serve,
  type ServeOptions,
  type SocksServer,
  type WebSocketServe,
} from "./lib/serve.ts";
export {
  PROXY_MAX_BUFFERED,
  PROXY_V1_MAX_LINE,
  PROXY_V2_SIGNATURE,
  type ProxyHeader,
  ProxyHeaderParser,
  type ProxyHeaderStep,
} from "./lib/core/proxy_protocol.ts";
export {
  type Accepted,
  DEFAULT_PROXY_PROTOCOL_FROM,
  DEFAULT_PROXY_PROTOCOL_TIMEOUT,
  IngressRefusal,
  type IngressStage,
  type ProxyProtocolOptions,
  proxyProtocolStage,
} from "./lib/ingress/proxy_protocol.ts";
export {
  checkDestination,
  type Cidr,
  clientAllowed,
  type ClientPolicy,
  DEFAULT_POLICY,
  type DestinationPolicy,
  type DestinationQuery,
  type DestinationRule,
  evaluateDestination,
  hostAddressSet,
  isNonPublicAddress,
  parseCidr,
  parseRule,
  type RuleCommand,
} from "./lib/policy.ts";
export { createAuthenticator, parseUsers } from "./lib/auth.ts";
export { type AuthBackoff, DEFAULT_AUTH_BACKOFF } from "./lib/admission.ts";
export { VERSION } from "./lib/version.ts";
export {
  decodeUdpDatagram,
  encodeUdpDatagram,
  type UdpDatagram,
  udpHeaderLength,
  type UdpInvalid,
} from "./lib/core/udp.ts";
export type { UdpBindOptions, UdpSocket } from "./lib/runtime.ts";
export {
  type AssociateRequest,
  type Association,
  UDP_DEFAULTS,
  UDP_DROPS,
  type UdpDrop,
  type UdpOptions,
  type UdpService,
  udpService,
} from "./lib/upstream/udp.ts";
export {
  DURATION_BUCKETS,
  emptySnapshot,
  exposition,
  type ExpositionExtras,
  GroupMetrics,
  type HistogramData,
  mergeSnapshots,
  Metrics,
  type MetricsSnapshot,
  parseSnapshot,
} from "./lib/ops/metrics.ts";
export { type AdminSource, serveAdmin } from "./lib/ops/admin.ts";
export { createReloader, type ReloadCounts, type ReloadSteps } from "./lib/ops/reload.ts";

// The CLI and the runtime adapter load only when this file is the program.
if (import.meta.main) await import("./lib/cli/bin.ts");
