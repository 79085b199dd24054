/**
 * SOCKS wire constants: every number that appears on the wire lives here and
 * nowhere else.
 *
 * @module
 */

/** Protocol version bytes. */
export const SocksVersion = {
  Socks4: 0x04,
  Socks5: 0x05,
  /** RFC 1929 username/password sub-negotiation version. */
  UserPassAuth: 0x01,
  /** Version byte of a SOCKS4 reply (the "VN" field is 0, not 4). */
  Socks4Reply: 0x00,
} as const;

/**
 * Commands, shared by SOCKS4 and SOCKS5 (Tor's extensions included).
 *
 * @example
 * ```ts
 * import { SocksCommand } from "@edgesocks/edgesocks";
 * const command: SocksCommand = SocksCommand.Resolve; // 0xF0: Tor's RESOLVE
 * ```
 */
export const SocksCommand = {
  Connect: 0x01,
  Bind: 0x02,
  UdpAssociate: 0x03,
  /** Tor: resolve a name, answer in the reply's address field. */
  Resolve: 0xf0,
  /** Tor: reverse-resolve an address (SOCKS5 only), answer as a domain name. */
  ResolvePtr: 0xf1,
  /** Tor: a tunnel like CONNECT that operators may route or deny on its own. */
  ConnectDir: 0xf2,
} as const;
/** A command byte. */
export type SocksCommand = typeof SocksCommand[keyof typeof SocksCommand];

/**
 * SOCKS5 address types (ATYP).
 *
 * @example
 * ```ts
 * import { AddressType } from "@edgesocks/edgesocks";
 * const atyp: AddressType = AddressType.IPv6; // 0x04: 16 address bytes follow
 * ```
 */
export const AddressType = {
  IPv4: 0x01,
  DomainName: 0x03,
  IPv6: 0x04,
} as const;
/** An ATYP byte. */
export type AddressType = typeof AddressType[keyof typeof AddressType];

/**
 * SOCKS5 authentication methods.
 *
 * @example
 * ```ts
 * import { AuthMethod } from "@edgesocks/edgesocks";
 * const greeting = Uint8Array.of(0x05, 2, AuthMethod.NoAuth, AuthMethod.UserPass); // VER, NMETHODS, METHODS
 * ```
 */
export const AuthMethod = {
  NoAuth: 0x00,
  UserPass: 0x02,
  NoAcceptable: 0xff,
} as const;
/** A method byte. */
export type AuthMethod = typeof AuthMethod[keyof typeof AuthMethod];

/** RFC 1929 status bytes. */
export const AuthStatus = {
  Success: 0x00,
  Failure: 0x01,
} as const;

/**
 * SOCKS5 reply codes (REP).
 *
 * @example
 * ```ts
 * import { ReplyCode } from "@edgesocks/edgesocks";
 * const refused = Uint8Array.of(0x05, ReplyCode.ConnectionRefused, 0x00, 0x01, 0, 0, 0, 0, 0, 0);
 * ```
 */
export const ReplyCode = {
  Succeeded: 0x00,
  GeneralFailure: 0x01,
  NotAllowed: 0x02,
  NetworkUnreachable: 0x03,
  HostUnreachable: 0x04,
  ConnectionRefused: 0x05,
  TtlExpired: 0x06,
  CommandNotSupported: 0x07,
  AddressTypeNotSupported: 0x08,
} as const;
/** A REP byte. */
export type ReplyCode = typeof ReplyCode[keyof typeof ReplyCode];

/**
 * Tor's extended SOCKS5 reply codes (proposal 304, a SocksPort with
 * `ExtendedErrors`): onion service failures. edgesocks never makes them up;
 * it passes them on from a Tor upstream to a SOCKS5 client.
 *
 * @example
 * ```ts
 * import { TorReplyCode } from "@edgesocks/edgesocks";
 * const notFound: number = TorReplyCode.OnionServiceNotFound; // 0xF0
 * ```
 */
export const TorReplyCode = {
  OnionServiceNotFound: 0xf0,
  OnionServiceInvalid: 0xf1,
  OnionServiceIntroFailed: 0xf2,
  OnionServiceRendezvousFailed: 0xf3,
  OnionServiceMissingClientAuth: 0xf4,
  OnionServiceWrongClientAuth: 0xf5,
  OnionServiceInvalidAddress: 0xf6,
  OnionServiceIntroTimedOut: 0xf7,
} as const;

/**
 * SOCKS4 reply codes (CD).
 *
 * @example
 * ```ts
 * import { Socks4ReplyCode } from "@edgesocks/edgesocks";
 * const granted = Uint8Array.of(0x00, Socks4ReplyCode.Granted, 0, 80, 93, 184, 216, 34); // VN, CD, port, IPv4
 * ```
 */
export const Socks4ReplyCode = {
  Granted: 0x5a,
  Rejected: 0x5b,
  NoIdentd: 0x5c,
  IdentMismatch: 0x5d,
} as const;
/** A SOCKS4 CD byte. */
export type Socks4ReplyCode = typeof Socks4ReplyCode[keyof typeof Socks4ReplyCode];

/** First bytes that mark an HTTP request sent to the SOCKS port by mistake. */
export const HttpFirstBytes: ReadonlySet<number> = new Set([
  0x47, // G(ET)
  0x48, // H(EAD)
  0x50, // P(OST|UT|ATCH)
  0x43, // C(ONNECT)
]);

/**
 * Protocol limits: no handshake message may exceed these.
 *
 * @example
 * ```ts
 * import { Limits } from "@edgesocks/edgesocks";
 * const fitsField = (name: string) => new TextEncoder().encode(name).length <= Limits.MaxField;
 * ```
 */
export const Limits = {
  /** Longest domain name / username / password: one length byte. */
  MaxField: 255,
  /** Longest SOCKS4 user id we accept (the protocol sets no bound). */
  MaxSocks4UserId: 255,
  /** Longest SOCKS4A host name (NUL excluded). */
  MaxSocks4Host: 255,
  /**
   * Largest number of handshake bytes ever buffered: a SOCKS4A request with
   * a 255-byte user id and a 255-byte host (8 + 256 + 256).
   */
  MaxHandshakeBuffer: 520,
} as const;
