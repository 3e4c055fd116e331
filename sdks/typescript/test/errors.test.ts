// The error helpers against errors the server really sends.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  AuthenticatorAssuranceLevel,
  ErrorReason,
  SessionTokenStore,
  createGrpcTransport,
  createTwofoldClient,
  fieldViolations,
  retryAfterMs,
  twofoldError,
  type TwofoldClient,
} from "@twofold/sdk/node";
import { newPerson, register, registerAndLogIn } from "./support/flows.ts";
import { startTwofold, type TwofoldProcess } from "./support/server.ts";

let server: TwofoldProcess;
before(async () => {
  server = await startTwofold();
});
after(async () => {
  await server?.stop();
});

function newClient(): { client: TwofoldClient; tokens: SessionTokenStore } {
  const tokens = new SessionTokenStore();
  return { client: createTwofoldClient(createGrpcTransport({ baseUrl: server.publicUrl, tokens })), tokens };
}

async function failure(call: Promise<unknown>): Promise<unknown> {
  return call.then(
    () => assert.fail("the call should have failed"),
    (err: unknown) => err,
  );
}

test("a wrong code is CODE_INVALID and a resend inside the cooldown says how long to wait", async () => {
  const { client, tokens } = newClient();
  const person = newPerson();
  await registerAndLogIn(client, tokens, person);
  const { flow } = await client.flows.createLoginFlow({ requestedAal: AuthenticatorAssuranceLevel.AAL2, via: "phone" });
  const code = await server.sms.nextCode(person.phoneE164);
  // Derived from the real code, so it is certainly wrong and still well-formed.
  const wrong = code.slice(0, -1) + String((Number(code.at(-1)) + 1) % 10);

  const invalid = twofoldError(await failure(client.flows.submitLoginCode({ flowId: flow!.id, code: wrong })));
  assert.equal(invalid?.reason, ErrorReason.CODE_INVALID);
  assert.equal(invalid?.reasonName, "CODE_INVALID");
  assert.ok(invalid?.message, "the status message is kept");

  const cooldown = await failure(client.flows.resendLoginCode({ flowId: flow!.id }));
  assert.equal(twofoldError(cooldown)?.reason, ErrorReason.CODE_RESEND_COOLDOWN);
  const wait = retryAfterMs(cooldown);
  assert.ok(wait !== undefined && wait > 0 && wait <= 30_000, `retryAfterMs within the 30 s cooldown, got ${wait}`);

  // The wrong code used one try, not the code: the right one still steps up.
  const stepped = await client.flows.submitLoginCode({ flowId: flow!.id, code });
  assert.equal(stepped.session?.aal, AuthenticatorAssuranceLevel.AAL2);
});

test("an invalid email in registration names the trait field", async () => {
  const { client } = newClient();
  const err = await failure(register(client, { ...newPerson(), email: "not-an-email" }));
  assert.equal(twofoldError(err)?.reason, ErrorReason.TRAITS_INVALID);
  const fields = fieldViolations(err).map((violation) => violation.field);
  assert.ok(fields.includes("traits.email"), `a violation for traits.email, got ${JSON.stringify(fieldViolations(err))}`);
  assert.ok(!fields.includes("traits.phone"), "the valid phone is not blamed");
  assert.equal(retryAfterMs(err), undefined);
});
