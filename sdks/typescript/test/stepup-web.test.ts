// The step-up over grpc-web, as the sign-in page makes it, with the code chosen and sent by email.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  AuthenticationMethodType,
  AuthenticatorAssuranceLevel,
  Channel,
  ErrorReason,
  FlowState,
  RequiredAal,
  SessionTokenStore,
  createTwofoldClient,
  createWebTransport,
  errorReason,
} from "@twofold/sdk";
import { newPerson, registerAndLogIn } from "./support/flows.ts";
import { mailpitFromEnv, nextEmailCode, type Mailpit } from "./support/mailpit.ts";
import { startTwofold, type TwofoldProcess } from "./support/server.ts";

let mailpit: Mailpit;
let server: TwofoldProcess;
before(async () => {
  mailpit = mailpitFromEnv();
  server = await startTwofold({ smtp: mailpit.smtp });
});
after(async () => {
  await server?.stop();
});

test("an AAL1 password session steps up to AAL2 with an email code over grpc-web", async () => {
  const tokens = new SessionTokenStore();
  const client = createTwofoldClient(createWebTransport({ baseUrl: server.publicUrl, tokens }));
  const person = newPerson();

  const { login } = await registerAndLogIn(client, tokens, person);
  const aal1Token = login.sessionToken;
  assert.equal(tokens.get(), aal1Token);
  await assert.rejects(client.sessions.whoAmI({}), (err) => errorReason(err) === ErrorReason.SESSION_AAL2_REQUIRED);

  // Without `via` the flow offers every code address and waits for the user to pick one.
  const { flow } = await client.flows.createLoginFlow({ requestedAal: AuthenticatorAssuranceLevel.AAL2 });
  assert.equal(flow?.state, FlowState.CHOOSE_METHOD);
  assert.deepEqual(flow?.codeChoices.map((choice) => choice.channel).sort(), [Channel.EMAIL, Channel.SMS]);
  const email = flow!.codeChoices.find((choice) => choice.channel === Channel.EMAIL)!;
  assert.notEqual(email.maskedAddress, person.email, "addresses are shown masked");

  const sent = await client.flows.sendLoginCode({ flowId: flow!.id, addressId: email.addressId });
  assert.equal(sent.flow?.state, FlowState.CODE_SENT);
  assert.equal(sent.flow?.codeSentTo?.channel, Channel.EMAIL);
  const code = await nextEmailCode(mailpit, person.email);
  assert.equal(server.sms.messages.length, 0, "choosing email sends no SMS");

  const stepped = await client.flows.submitLoginCode({ flowId: flow!.id, code });
  assert.ok(stepped.sessionToken && stepped.sessionToken !== aal1Token);
  assert.equal(tokens.get(), stepped.sessionToken);

  const aal2 = await client.sessions.whoAmI({});
  assert.equal(aal2.session?.aal, AuthenticatorAssuranceLevel.AAL2);
  const methods = aal2.session?.authenticationMethods ?? [];
  assert.deepEqual(
    methods.map((method) => method.method),
    [AuthenticationMethodType.PASSWORD, AuthenticationMethodType.CODE],
  );
  assert.equal(methods[1]?.channel, Channel.EMAIL);

  const stale = new SessionTokenStore();
  stale.set(aal1Token);
  const staleClient = createTwofoldClient(createWebTransport({ baseUrl: server.publicUrl, tokens: stale }));
  await assert.rejects(
    staleClient.sessions.whoAmI({ requiredAal: RequiredAal.AAL1 }),
    (err) => errorReason(err) === ErrorReason.SESSION_INACTIVE,
  );
  assert.equal(stale.get(), undefined);
});
