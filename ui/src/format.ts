// Enum values and timestamps as a person reads them.
import { AuthenticationMethodType, AuthenticatorAssuranceLevel, Channel, type AuthenticationMethod } from "@twofold/sdk";

interface TimestampLike {
  seconds: bigint;
  nanos: number;
}

export function aalName(aal: AuthenticatorAssuranceLevel): string {
  switch (aal) {
    case AuthenticatorAssuranceLevel.AAL1:
      return "AAL1";
    case AuthenticatorAssuranceLevel.AAL2:
      return "AAL2";
    default:
      return "unknown";
  }
}

export function aalMeaning(aal: AuthenticatorAssuranceLevel): string {
  return aal === AuthenticatorAssuranceLevel.AAL2 ? "two factors" : "one factor";
}

/** "by email" / "by SMS". */
export function channelText(channel: Channel): string {
  switch (channel) {
    case Channel.EMAIL:
      return "by email";
    case Channel.SMS:
      return "by SMS";
    default:
      return "";
  }
}

export function methodName(method: AuthenticationMethod): string {
  switch (method.method) {
    case AuthenticationMethodType.PASSWORD:
      return "password";
    case AuthenticationMethodType.CODE:
      return "code";
    default:
      return "unknown";
  }
}

export function timestampMs(timestamp: TimestampLike | undefined): number | undefined {
  if (!timestamp) return undefined;
  return Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1_000_000);
}

export function timeText(timestamp: TimestampLike | undefined): string {
  const ms = timestampMs(timestamp);
  if (ms === undefined) return "";
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
