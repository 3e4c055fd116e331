import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { ErrorReason } from "./gen/twofold/v1/errors_pb.js";

/** The domain of every ErrorInfo the server sends. */
export const ERROR_DOMAIN = "twofold";

export interface FieldViolation {
  /** Path of the offending field, for example "traits.email". */
  field: string;
  description: string;
}

/** A failed call's status and its `grpc-status-details-bin` details, decoded. */
export interface TwofoldError {
  code: Code;
  /** UNSPECIFIED when this SDK is older than the server and does not know `reasonName`. */
  reason: ErrorReason;
  /** The reason as sent, for example "CODE_INVALID". */
  reasonName: string;
  /** The status message, without connect's "[code]" prefix. */
  message: string;
  metadata: Record<string, string>;
  /** From RetryInfo: how long to wait before trying again (cooldowns and rate limits). */
  retryAfterMs?: number;
  /** From BadRequest: which fields were refused and why. */
  fieldViolations: FieldViolation[];
}

/**
 * Decodes a failed call. Answers undefined for anything that is not a ConnectError carrying
 * Twofold's ErrorInfo (a network failure, a proxy's error page, a programming error).
 */
export function twofoldError(err: unknown): TwofoldError | undefined {
  if (!(err instanceof ConnectError)) return undefined;
  const info = err.findDetails(ErrorInfoSchema).find((detail) => detail.domain === ERROR_DOMAIN);
  if (!info) return undefined;
  const retry = err.findDetails(RetryInfoSchema).find((detail) => detail.retryDelay !== undefined);
  const error: TwofoldError = {
    code: err.code,
    reason: reasonFromName(info.reason),
    reasonName: info.reason,
    message: err.rawMessage,
    metadata: { ...info.metadata },
    fieldViolations: err
      .findDetails(BadRequestSchema)
      .flatMap((request) => request.fieldViolations)
      .map(({ field, description }) => ({ field, description })),
  };
  if (retry?.retryDelay) {
    error.retryAfterMs = Number(retry.retryDelay.seconds) * 1000 + Math.ceil(retry.retryDelay.nanos / 1_000_000);
  }
  return error;
}

export function errorReason(err: unknown): ErrorReason | undefined {
  return twofoldError(err)?.reason;
}

export function retryAfterMs(err: unknown): number | undefined {
  return twofoldError(err)?.retryAfterMs;
}

export function fieldViolations(err: unknown): FieldViolation[] {
  return twofoldError(err)?.fieldViolations ?? [];
}

// TypeScript's numeric enums map names to values, but also inherit Object's keys.
function reasonFromName(name: string): ErrorReason {
  const value: unknown = Object.prototype.hasOwnProperty.call(ErrorReason, name)
    ? (ErrorReason as unknown as Record<string, unknown>)[name]
    : undefined;
  return typeof value === "number" ? (value as ErrorReason) : ErrorReason.UNSPECIFIED;
}
