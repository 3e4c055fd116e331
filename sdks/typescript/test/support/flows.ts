// The steps before the step-up, shared by the tests: a new identity, then an AAL1 session.
import { randomBytes, randomInt } from "node:crypto";
import { AuthenticatorAssuranceLevel, type SessionTokenStore, type TwofoldClient } from "@twofold/sdk";

export interface Person {
  email: string;
  /** As typed, with spaces, the way the seed's users enter it. */
  phone: string;
  /** As the server stores it and addresses SMS. */
  phoneE164: string;
  password: string;
}

/** Unique per call, since Mailpit is shared by every test on the machine. */
export function newPerson(): Person {
  const subscriber = String(randomInt(10_000_000, 100_000_000));
  return {
    email: `sdk-${randomBytes(6).toString("hex")}@example.com`,
    phone: `+49 151 ${subscriber}`,
    phoneE164: `+49151${subscriber}`,
    password: `correct horse ${randomBytes(8).toString("hex")}`,
  };
}

export async function register(client: TwofoldClient, person: Person) {
  const { flow } = await client.flows.createRegistrationFlow({});
  return client.flows.submitRegistrationFlow({
    flowId: flow!.id,
    traits: { email: person.email, phone: person.phone },
    password: person.password,
  });
}

/** Registers and logs in with the password; the store then holds the AAL1 login token. */
export async function registerAndLogIn(client: TwofoldClient, tokens: SessionTokenStore, person: Person) {
  const registered = await register(client, person);
  // A fresh password login, as the seed's user does it, not the registration's session.
  tokens.clear();
  const { flow } = await client.flows.createLoginFlow({ requestedAal: AuthenticatorAssuranceLevel.AAL1 });
  const login = await client.flows.submitLoginPassword({
    flowId: flow!.id,
    identifier: person.email,
    password: person.password,
  });
  return { registered, login };
}
