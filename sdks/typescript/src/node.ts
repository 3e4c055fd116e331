import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport as createNodeGrpcTransport } from "@connectrpc/connect-node";
import { CodeService } from "./gen/twofold/v1/code_pb.js";
import { ConfigService } from "./gen/twofold/v1/config_pb.js";
import { CourierService } from "./gen/twofold/v1/courier_pb.js";
import { IdentityService } from "./gen/twofold/v1/identity_pb.js";
import { SessionAdminService } from "./gen/twofold/v1/session_pb.js";
import { bearerInterceptor, sessionTokenInterceptor } from "./interceptor.js";
import type { SessionTokenStore } from "./tokens.js";

export * from "./index.js";

export interface GrpcTransportOptions {
  /** The public or the admin listener, for example "http://127.0.0.1:4433". */
  baseUrl: string;
  /** Public listener: calls carry its token and rotated tokens land in it. */
  tokens?: SessionTokenStore;
  /** Admin listener: sent as the bearer credential instead of a session token. */
  adminKey?: string;
}

/** gRPC over HTTP/2 (prior knowledge for http:// URLs), for Node backends and scripts. */
export function createGrpcTransport(options: GrpcTransportOptions): Transport {
  const interceptors = options.adminKey
    ? [bearerInterceptor(options.adminKey)]
    : options.tokens
      ? [sessionTokenInterceptor(options.tokens)]
      : [];
  // connect-node's gRPC transport always speaks HTTP/2, which gRPC requires.
  return createNodeGrpcTransport({ baseUrl: options.baseUrl, interceptors });
}

/** The admin listener's services. */
export interface TwofoldAdminClient {
  identities: Client<typeof IdentityService>;
  codes: Client<typeof CodeService>;
  config: Client<typeof ConfigService>;
  courier: Client<typeof CourierService>;
  sessions: Client<typeof SessionAdminService>;
}

export function createAdminClient(transport: Transport): TwofoldAdminClient {
  return {
    identities: createClient(IdentityService, transport),
    codes: createClient(CodeService, transport),
    config: createClient(ConfigService, transport),
    courier: createClient(CourierService, transport),
    sessions: createClient(SessionAdminService, transport),
  };
}
