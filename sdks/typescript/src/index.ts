// Browser-safe entry point: nothing here may import node: modules or @connectrpc/connect-node.
export * from "./gen/twofold/v1/code_pb.js";
export * from "./gen/twofold/v1/config_pb.js";
export * from "./gen/twofold/v1/courier_pb.js";
export * from "./gen/twofold/v1/errors_pb.js";
export * from "./gen/twofold/v1/flow_pb.js";
export * from "./gen/twofold/v1/identity_pb.js";
export * from "./gen/twofold/v1/session_pb.js";
export * from "./gen/twofold/v1/types_pb.js";
// config.proto's message IdentitySchema (a type) and types.proto's Identity message (whose
// schema constant is IdentitySchema) share a name; a type and a value may, so both stay as generated.
import { IdentitySchema as IdentityMessageSchema } from "./gen/twofold/v1/types_pb.js";
import type { IdentitySchema as ConfigIdentitySchema } from "./gen/twofold/v1/config_pb.js";
export const IdentitySchema = IdentityMessageSchema;
export type IdentitySchema = ConfigIdentitySchema;
export { create, toJson, fromJson } from "@bufbuild/protobuf";
export { Code, ConnectError } from "@connectrpc/connect";
export type { Client, Interceptor, Transport } from "@connectrpc/connect";

export { SessionTokenStore, type SessionTokenStoreOptions, type TokenStorage } from "./tokens.js";
export { sessionTokenInterceptor, bearerInterceptor } from "./interceptor.js";
export { createWebTransport, type WebTransportOptions } from "./web.js";
export { createTwofoldClient, type TwofoldClient } from "./client.js";
export {
  ERROR_DOMAIN,
  errorReason,
  fieldViolations,
  retryAfterMs,
  twofoldError,
  type FieldViolation,
  type TwofoldError,
} from "./errors.js";
