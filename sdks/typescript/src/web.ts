import type { Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { sessionTokenInterceptor } from "./interceptor.js";
import type { SessionTokenStore } from "./tokens.js";

export interface WebTransportOptions {
  /** The public listener, for example "https://auth.example.com". */
  baseUrl: string;
  /** When given, calls carry its token and rotated tokens land in it. */
  tokens?: SessionTokenStore;
  fetch?: typeof fetch;
}

/** grpc-web over fetch, for browsers (the server must list the page's origin in its CORS config). */
export function createWebTransport(options: WebTransportOptions): Transport {
  return createGrpcWebTransport({
    baseUrl: options.baseUrl,
    interceptors: options.tokens ? [sessionTokenInterceptor(options.tokens)] : [],
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
}
