// What the page tells a person for each ErrorReason. The server's status message is for
// developers and may change; the reason is stable, so the page's text hangs off the reason.
import { ErrorReason, twofoldError, type FieldViolation } from "@twofold/sdk";

// Record<ErrorReason, …> makes a reason added to the proto a type error here until it has text.
export const REASON_TEXT: Record<ErrorReason, string> = {
  [ErrorReason.UNSPECIFIED]: "Something went wrong. Please try again.",
  [ErrorReason.INTERNAL]: "Something went wrong on our side. Please try again in a moment.",
  [ErrorReason.STORE_UNAVAILABLE]:
    "Sign-in is unavailable for a moment. Nothing was changed; please try again shortly.",
  [ErrorReason.NOT_IMPLEMENTED]: "This server does not support that yet.",
  [ErrorReason.VALIDATION_FAILED]: "Please check the highlighted fields.",
  [ErrorReason.ADMIN_KEY_REQUIRED]: "That needs an administrator key, which this page never uses.",
  [ErrorReason.ADMIN_KEY_INVALID]: "The administrator key was not accepted.",
  [ErrorReason.SESSION_INACTIVE]: "You are signed out or your session has ended. Please sign in again.",
  [ErrorReason.SESSION_AAL1_REQUIRED]: "Please sign in with your password first.",
  [ErrorReason.SESSION_AAL2_REQUIRED]: "Please finish the second step: enter a one-time code.",
  [ErrorReason.SESSION_ALREADY_AVAILABLE]: "You have already completed this step.",
  [ErrorReason.SESSION_NOT_FOUND]: "That session no longer exists.",
  [ErrorReason.IDENTITY_NOT_FOUND]: "This account no longer exists.",
  [ErrorReason.IDENTIFIER_TAKEN]:
    "An account with this email address or phone number already exists. Sign in instead.",
  [ErrorReason.TRAITS_INVALID]: "Please check the highlighted fields.",
  [ErrorReason.SCHEMA_NOT_FOUND]: "Sign-up is misconfigured on this server: its identity schema is missing.",
  [ErrorReason.PASSWORD_POLICY_VIOLATION]:
    "This password is not allowed. Choose a longer one that does not resemble your email address.",
  [ErrorReason.INVALID_CREDENTIALS]: "The email address or password is not correct.",
  [ErrorReason.FLOW_NOT_FOUND]: "This sign-in attempt is no longer known. Please start again.",
  [ErrorReason.FLOW_EXPIRED]: "This sign-in attempt took too long and has expired. Please start again.",
  [ErrorReason.FLOW_STATE_INVALID]: "This step is already done or no longer possible. Please start again.",
  [ErrorReason.METHOD_DISABLED]: "This way of signing in is turned off on this server.",
  [ErrorReason.FLOW_SESSION_MISMATCH]: "This sign-in attempt belongs to another session. Please start again.",
  [ErrorReason.CODE_INVALID]: "That code is not correct or has expired. Check the latest message and try again.",
  [ErrorReason.CODE_SUBMITTED_TOO_OFTEN]: "Too many wrong codes. Request a new code and enter that one.",
  [ErrorReason.CODE_RESEND_COOLDOWN]: "A code was sent moments ago. Please wait before asking for another.",
  [ErrorReason.RATE_LIMITED]: "Too many attempts. Please wait a while before trying again.",
  [ErrorReason.VIA_TRAIT_UNKNOWN]: "Codes cannot be sent that way for this account. Choose another way.",
  [ErrorReason.VIA_TRAIT_EMPTY]: "Your account has no address for that way. Choose another way.",
  [ErrorReason.ADDRESS_NOT_ALLOWED]: "Codes cannot be sent to that address. Choose one of the addresses shown.",
  [ErrorReason.CHALLENGE_NOT_FOUND]: "This code request is no longer known. Request a new code.",
  [ErrorReason.CONFIG_INVALID]: "The server refused the configuration.",
  [ErrorReason.CONFIG_VERSION_CONFLICT]: "Someone else changed the configuration. Reload and try again.",
  [ErrorReason.CONFIG_VERSION_NOT_FOUND]: "That configuration version does not exist.",
  [ErrorReason.MESSAGE_NOT_FOUND]: "That message does not exist.",
};

export const UNREACHABLE_TEXT = "The sign-in service cannot be reached. Check your connection and try again.";

/** A failed call as the page shows it. */
export interface Problem {
  /** Undefined when the server could not be reached or did not answer as Twofold. */
  reason?: ErrorReason;
  text: string;
  retryAfterMs?: number;
  fields: FieldViolation[];
}

export function reasonText(reason: ErrorReason): string {
  return REASON_TEXT[reason] ?? REASON_TEXT[ErrorReason.UNSPECIFIED];
}

export function describe(err: unknown): Problem {
  const decoded = twofoldError(err);
  if (!decoded) {
    // Programming errors must not pass as network trouble in the console.
    console.error(err);
    return { text: UNREACHABLE_TEXT, fields: [] };
  }
  let text = reasonText(decoded.reason);
  if (decoded.retryAfterMs !== undefined) text += ` Try again in ${waitText(decoded.retryAfterMs)}.`;
  return { reason: decoded.reason, text, retryAfterMs: decoded.retryAfterMs, fields: decoded.fieldViolations };
}

export function waitText(ms: number): string {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  if (seconds < 120) return `${seconds} s`;
  return `${Math.ceil(seconds / 60)} min`;
}
