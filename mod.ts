/**
 * relay as a library: the server, the client and the tunnel, for Deno programs.
 *
 * @example Run a relay and exchange one message
 * ```ts
 * import { RelayClient, RelayServer } from "./mod.ts";
 *
 * await using server = await RelayServer.listen({ hostname: "127.0.0.1", port: 0 });
 * await using alice = await RelayClient.connect({ port: server.port, name: "alice" });
 * await using bob = await RelayClient.connect({ port: server.port, name: "bob" });
 * await alice.send("bob", new TextEncoder().encode("hello"));
 * const message = await bob.receive();
 * console.log(message?.from, new TextDecoder().decode(message?.payload)); // alice hello
 * ```
 * @module
 */

export {
  type Rate,
  RelayServer,
  type RelayServerOptions,
  type RelayStats,
  type TlsCertificate,
} from "./lib/relay/server.ts";
export { AuthPolicy, type AuthPolicyOptions, hashToken } from "./lib/relay/auth.ts";
export {
  type ByeReason,
  ControlRequestError,
  type DeliveryError,
  type FlushResult,
  type Pong,
  type PresenceChange,
  RegistrationError,
  type RegistrationFailure,
  RelayClient,
  type RelayClientOptions,
  type RelayMessage,
  type WelcomeEvent,
} from "./lib/client/client.ts";
export {
  type ForwardOptions,
  relayLinkFactory,
  type RelayLinkOptions,
  type Target,
  Tunnel,
  type TunnelOptions,
} from "./lib/tunnel/tunnel.ts";
export type { TunnelSessionStats } from "./lib/tunnel/stats.ts";
export {
  CONTROL_ERROR_REASONS,
  type ControlErrorReason,
  DISCONNECT_REASONS,
  type DisconnectReason,
  DROP_REASONS,
  type DropReason,
  REFUSAL_REASONS,
  type RefusalReason,
  REGISTRATION_REASONS,
  type RegistrationReason,
  TUNNEL_DROP_REASONS,
  TUNNEL_REJECT_REASONS,
  TUNNEL_RESET_REASONS,
  type TunnelDropReason,
  type TunnelRejectReason,
  type TunnelResetReason,
} from "./lib/wire/reasons.ts";
export { ProtocolError, type ProtocolErrorCode } from "./lib/wire/relay.ts";
export { VERSION } from "./lib/version.ts";
