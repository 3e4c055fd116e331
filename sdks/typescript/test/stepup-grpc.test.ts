// The seed's scenario over HTTP/2 gRPC: AAL1 by password, AAL2 by a code sent by SMS.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  AuthenticationMethodType,
  AuthenticatorAssuranceLevel,
  Channel,
  Code,
  ErrorReason,
  FlowState,
  RequiredAal,
  SessionTokenStore,
  createGrpcTransport,
  createTwofoldClient,
  errorReason,
  twofoldError,
} from "@twofold/sdk/node";
import { newPerson, registerAndLogIn } from "./support/flows.ts";
import { startTwofold, type TwofoldProcess } from "./support/server.ts";

let server: TwofoldProcess;
before(async () => {
  server = await startTwofold();
});
after(async () => {
  await server?.stop();
});

test("an AAL1 password session steps up to AAL2 with an SMS code over gRPC", async () => {
  const tokens = new SessionTokenStore();
  const client = createTwofoldClient(createGrpcTransport({ baseUrl: server.publicUrl, tokens }));
  const person = newPerson();

  const { registered, login } = await registerAndLogIn(client, tokens, person);
  assert.equal(registered.identity?.traits?.phone, person.phoneE164);
  assert.ok(login.sessionToken);
  assert.equal(tokens.get(), login.sessionToken, "the interceptor stores the login token");
  const aal1Token = login.sessionToken;

  // With code MFA on and a phone on file, the highest available level is AAL2.
  const refused = await client.sessions.whoAmI({}).then(
    () => assert.fail("WhoAmI without a required AAL should refuse an AAL1 session"),
    (err: unknown) => err,
  );
  assert.equal(errorReason(refused), ErrorReason.SESSION_AAL2_REQUIRED);
  assert.equal(twofoldError(refused)?.reasonName, "SESSION_AAL2_REQUIRED");
  assert.equal(twofoldError(refused)?.code, Code.PermissionDenied);
  assert.equal(tokens.get(), aal1Token, "an AAL refusal leaves the token alone");

  const aal1 = await client.sessions.whoAmI({ requiredAal: RequiredAal.AAL1 });
  assert.equal(aal1.session?.aal, AuthenticatorAssuranceLevel.AAL1);

  const { flow } = await client.flows.createLoginFlow({ requestedAal: AuthenticatorAssuranceLevel.AAL2, via: "phone" });
  assert.equal(flow?.state, FlowState.CODE_SENT);
  assert.equal(flow?.codeSentTo?.channel, Channel.SMS);
  const code = await server.sms.nextCode(person.phoneE164);
  assert.match(code, /^\d{6}$/);

  const stepped = await client.flows.submitLoginCode({ flowId: flow!.id, code });
  assert.ok(stepped.sessionToken);
  assert.notEqual(stepped.sessionToken, aal1Token);
  assert.equal(tokens.get(), stepped.sessionToken, "the interceptor stores the rotated token");

  const aal2 = await client.sessions.whoAmI({});
  assert.equal(aal2.session?.aal, AuthenticatorAssuranceLevel.AAL2);
  assert.deepEqual(
    aal2.session?.authenticationMethods.map((method) => method.method),
    [AuthenticationMethodType.PASSWORD, AuthenticationMethodType.CODE],
  );

  // The step-up revoked the AAL1 token; a client still holding it loses it on first use.
  const stale = new SessionTokenStore();
  stale.set(aal1Token);
  const staleClient = createTwofoldClient(createGrpcTransport({ baseUrl: server.publicUrl, tokens: stale }));
  const inactive = await staleClient.sessions.whoAmI({ requiredAal: RequiredAal.AAL1 }).then(
    () => assert.fail("the replaced token should be inactive"),
    (err: unknown) => err,
  );
  assert.equal(errorReason(inactive), ErrorReason.SESSION_INACTIVE);
  assert.equal(stale.get(), undefined, "SESSION_INACTIVE clears the store");
});
