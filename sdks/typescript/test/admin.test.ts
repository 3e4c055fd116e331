// The admin listener through the SDK: the backend verification API, and the key it demands.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { Channel, Code, ErrorReason, createAdminClient, createGrpcTransport, twofoldError } from "@twofold/sdk/node";
import { newPerson } from "./support/flows.ts";
import { startTwofold, type TwofoldProcess } from "./support/server.ts";

let server: TwofoldProcess;
before(async () => {
  server = await startTwofold();
});
after(async () => {
  await server?.stop();
});

test("with the admin key, CodeService sends a code by SMS and verifies it", async () => {
  const admin = createAdminClient(createGrpcTransport({ baseUrl: server.adminUrl, adminKey: server.adminKey }));
  const person = newPerson();
  const { identity } = await admin.identities.createIdentity({ traits: { email: person.email, phone: person.phone } });
  assert.ok(identity?.id);

  const sent = await admin.codes.sendCode({
    identityId: identity.id,
    target: { case: "via", value: "phone" },
    purpose: "confirm-payout",
    requestId: randomUUID(),
  });
  assert.equal(sent.channel, Channel.SMS);
  const code = await server.sms.nextCode(person.phoneE164);

  // A refused code is an answer, not a failed call: backends branch on the reason.
  const wrongPurpose = await admin.codes.verifyCode({ challengeId: sent.challengeId, code, purpose: "something-else" });
  assert.equal(wrongPurpose.verified, false, "a code verifies only for the purpose it was sent for");
  assert.equal(wrongPurpose.failureReason, ErrorReason.CODE_INVALID);

  const verified = await admin.codes.verifyCode({ challengeId: sent.challengeId, code, purpose: "confirm-payout" });
  assert.equal(verified.verified, true);
  assert.equal(verified.identityId, identity.id);
});

test("without the admin key the admin listener answers ADMIN_KEY_REQUIRED", async () => {
  const anonymous = createAdminClient(createGrpcTransport({ baseUrl: server.adminUrl }));
  const err = twofoldError(await anonymous.identities.listIdentities({}).catch((e: unknown) => e));
  assert.equal(err?.reason, ErrorReason.ADMIN_KEY_REQUIRED);
  assert.equal(err?.code, Code.Unauthenticated);

  const wrongKey = createAdminClient(createGrpcTransport({ baseUrl: server.adminUrl, adminKey: "x".repeat(40) }));
  const invalid = twofoldError(
    await wrongKey.codes.verifyCode({ challengeId: randomUUID(), code: "123456", purpose: "p" }).catch((e: unknown) => e),
  );
  assert.equal(invalid?.reason, ErrorReason.ADMIN_KEY_INVALID);
});
