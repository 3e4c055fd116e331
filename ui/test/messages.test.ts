// Every ErrorReason the contract has must have its own human text: the page may show any of them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ErrorReason } from "@twofold/sdk";
import { REASON_TEXT, describe, reasonText, waitText } from "../src/messages.ts";

const reasons = Object.values(ErrorReason).filter((value): value is ErrorReason => typeof value === "number");

test("the generated enum is what this test iterates", () => {
  assert.ok(reasons.length >= 30, `only ${reasons.length} reasons found`);
  assert.ok(reasons.includes(ErrorReason.CODE_INVALID));
});

test("every ErrorReason has a sentence of its own", () => {
  for (const reason of reasons) {
    const text = REASON_TEXT[reason];
    assert.equal(typeof text, "string", `no text for ${ErrorReason[reason]}`);
    assert.match(text, /^[A-Z].*[.]$/, `${ErrorReason[reason]}: "${text}" is not a sentence`);
    // The enum name is for developers, never for the person at the page.
    assert.ok(!text.includes(ErrorReason[reason]!), `${ErrorReason[reason]} leaks its name`);
  }
});

test("the map has no text for reasons the contract lacks", () => {
  const known = new Set<string>(reasons.map(String));
  for (const key of Object.keys(REASON_TEXT)) assert.ok(known.has(key), `text for unknown reason ${key}`);
});

test("texts that send the person somewhere differ from each other", () => {
  const distinct = [
    ErrorReason.INVALID_CREDENTIALS,
    ErrorReason.CODE_INVALID,
    ErrorReason.CODE_SUBMITTED_TOO_OFTEN,
    ErrorReason.CODE_RESEND_COOLDOWN,
    ErrorReason.RATE_LIMITED,
    ErrorReason.SESSION_INACTIVE,
    ErrorReason.FLOW_EXPIRED,
    ErrorReason.IDENTIFIER_TAKEN,
  ].map(reasonText);
  assert.equal(new Set(distinct).size, distinct.length);
});

test("a reason from a newer server falls back to the generic text", () => {
  assert.equal(reasonText(999 as ErrorReason), REASON_TEXT[ErrorReason.UNSPECIFIED]);
});

test("anything that is not Twofold's error reads as the service being unreachable", () => {
  const original = console.error;
  console.error = () => {};
  try {
    const problem = describe(new TypeError("Failed to fetch"));
    assert.equal(problem.reason, undefined);
    assert.match(problem.text, /cannot be reached/);
    assert.deepEqual(problem.fields, []);
  } finally {
    console.error = original;
  }
});

test("waits read in seconds, then minutes", () => {
  assert.equal(waitText(200), "1 s");
  assert.equal(waitText(29_001), "30 s");
  assert.equal(waitText(3_600_000), "60 min");
});
