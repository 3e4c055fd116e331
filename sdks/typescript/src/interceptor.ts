import type { Interceptor } from "@connectrpc/connect";
import { errorReason } from "./errors.js";
import { ErrorReason } from "./gen/twofold/v1/errors_pb.js";
import type { SessionTokenStore } from "./tokens.js";

/**
 * Sends the store's token as `authorization: Bearer <token>` and keeps the store current:
 * registration, password login and a code step-up answer with a new `sessionToken` (the step-up
 * revokes the old one), and SESSION_INACTIVE means the token is dead.
 */
export function sessionTokenInterceptor(store: SessionTokenStore): Interceptor {
  return (next) => async (request) => {
    const sent = store.get();
    if (sent && !request.header.has("authorization")) request.header.set("authorization", `Bearer ${sent}`);
    try {
      const response = await next(request);
      if (!response.stream) {
        const rotated = (response.message as { sessionToken?: unknown }).sessionToken;
        if (typeof rotated === "string" && rotated !== "") store.set(rotated);
      }
      return response;
    } catch (err) {
      // Only the token this call sent is known dead; a concurrent call may have stored a newer one.
      if (sent && store.get() === sent && errorReason(err) === ErrorReason.SESSION_INACTIVE) store.clear();
      throw err;
    }
  };
}

/** Sends a fixed bearer credential (the admin API key). */
export function bearerInterceptor(credential: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${credential}`);
    return next(request);
  };
}
