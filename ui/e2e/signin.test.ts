// The sign-in page in real Chromium against a real `twofold serve` that serves it
// (serve.public.static_dir), with codes by email through Mailpit and by SMS through the webhook
// stand-in. Every step leaves a screenshot in e2e/artifacts/.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ErrorReason } from "@twofold/sdk";
import type { Browser, Page } from "playwright-core";
import { mailpitFromEnv, nextEmailCode, type Mailpit } from "../../sdks/typescript/test/support/mailpit.ts";
import { startTwofold, type TwofoldProcess } from "../../sdks/typescript/test/support/server.ts";
import { REASON_TEXT } from "../src/messages.ts";
import { DIST, freshArtifacts, launchChromium, phonePage, screenshots } from "./support/browser.ts";
import { enterCode, heading, newPerson, register, signIn, whoAmI, wrongCode, type Person } from "./support/page.ts";

// Short, so the resend button's countdown can be watched to its end within a test.
const RESEND_COOLDOWN_SECONDS = 4;

let mailpit: Mailpit;
let server: TwofoldProcess;
let browser: Browser;

before(async () => {
  mailpit = mailpitFromEnv();
  if (!existsSync(join(DIST, "index.html"))) {
    throw new Error(`${DIST}/index.html is missing: build the page first (npm run build -w @twofold/ui)`);
  }
  await freshArtifacts();
  server = await startTwofold({
    smtp: mailpit.smtp,
    env: {
      SERVE_PUBLIC_STATIC_DIR: DIST,
      SELFSERVICE_METHODS_CODE_CONFIG_RESEND_COOLDOWN: `${RESEND_COOLDOWN_SECONDS}s`,
    },
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Runs one scenario in its own browser context; on failure shows what the page and server said. */
async function scenario(name: string, body: (page: Page, shot: (step: string) => Promise<void>) => Promise<void>) {
  const { context, page, problems } = await phonePage(browser);
  const shot = screenshots(page, name);
  try {
    await body(page, shot);
    assert.deepEqual(problems, [], "the page logged errors");
  } catch (error) {
    await shot("failure").catch(() => {});
    const detail = [
      `page problems:\n${problems.join("\n") || "none"}`,
      `page text:\n${await page.locator("body").innerText().catch(() => "?")}`,
      `server log (tail):\n${server.log().split("\n").slice(-40).join("\n")}`,
    ].join("\n\n");
    throw Object.assign(error as Error, { message: `${(error as Error).message}\n\n${detail}` });
  } finally {
    await context.close();
  }
}

async function registerOnPage(page: Page, shot: (step: string) => Promise<void>, person: Person): Promise<void> {
  await page.goto(`${server.publicUrl}/?view=register`);
  await heading(page, "Create your account");
  await shot("register");
  await register(page, person);
  // A new account with an email and a phone is AAL1; the server wants AAL2, so the page moves on.
  await heading(page, "Second step");
}

async function chooseAddress(page: Page, label: RegExp): Promise<void> {
  await page.getByRole("button", { name: label }).click();
  await heading(page, "Enter the code");
}

test("register, sign in, choose the email address, type the code from Mailpit: AAL2", async () => {
  await scenario("email", async (page, shot) => {
    const person = newPerson();
    const response = await page.goto(`${server.publicUrl}/`);
    assert.equal(response?.status(), 200);
    assert.match(response?.headers()["content-security-policy"] ?? "", /default-src 'self'/);
    await heading(page, "Sign in");
    await shot("start");

    await registerOnPage(page, shot, person);
    await page.getByText("Your account is ready.").waitFor();
    await shot("registered");
    await page.getByRole("button", { name: "Sign out" }).click();
    await heading(page, "Sign in");
    await page.getByText("You are signed out.").waitFor();
    await shot("signed-out");

    await signIn(page, person);
    await heading(page, "Second step");
    const emailChoice = page.getByRole("button", { name: /^Send code to j\*\*\*@example\.com/ });
    assert.match(await emailChoice.innerText(), /by email/);
    const smsChoice = page.getByRole("button", { name: /^Send code to \+49\*+\d{3}/ });
    assert.match(await smsChoice.innerText(), /by SMS/);
    // The seed's step-up URL, one address only.
    assert.equal(await page.getByRole("link", { name: "Use my phone only" }).getAttribute("href"), "?aal=aal2&via=phone");
    assert.equal(await page.getByRole("link", { name: "Use my email only" }).getAttribute("href"), "?aal=aal2&via=email");
    await shot("second-step");

    await chooseAddress(page, /^Send code to j\*\*\*@example\.com/);
    assert.match(await page.getByTestId("sent-to").innerText(), /by email to j\*\*\*@example\.com/);
    const resend = page.getByRole("button", { name: "Send a new code" });
    assert.ok(await resend.isDisabled(), "resend waits for the cooldown");
    assert.match(await page.getByTestId("resend-countdown").innerText(), /available in \d+ s/);
    await shot("code-sent");

    const code = await nextEmailCode(mailpit, person.email);
    assert.equal(server.sms.messages.length, 0, "choosing email sends no SMS");
    await page.getByLabel("One-time code").fill(code);
    await shot("code-typed");
    await enterCode(page, code);

    const facts = await whoAmI(page);
    assert.match(facts.aal, /^AAL2\b/);
    assert.equal(facts.methods.length, 2, facts.methods.join(" | "));
    assert.match(facts.methods[0]!, /^password\b/);
    assert.match(facts.methods[1]!, /^code by email\b.*AAL2/);
    assert.equal(facts.email, `${person.email} (verified)`);
    assert.equal(facts.phone, person.phoneE164);
    await page.getByText("Second step done.").waitFor();
    await shot("aal2");
  });
});

test("a wrong code shows the CODE_INVALID message; the right one still works", async () => {
  await scenario("wrong-code", async (page, shot) => {
    const person = newPerson();
    await registerOnPage(page, shot, person);
    await chooseAddress(page, /^Send code to j\*\*\*@example\.com/);
    const code = await nextEmailCode(mailpit, person.email);

    await enterCode(page, wrongCode(code));
    const message = REASON_TEXT[ErrorReason.CODE_INVALID];
    await page.getByText(message).waitFor();
    const input = page.getByLabel("One-time code");
    assert.equal(await input.getAttribute("aria-invalid"), "true");
    // The message is tied to the input for screen readers.
    const describedBy = (await input.getAttribute("aria-describedby")) ?? "";
    const errorId = describedBy.split(" ").find((id) => id.endsWith("-error"))!;
    assert.equal(await page.locator(`#${errorId}`).innerText(), message);
    await shot("wrong-code");

    await enterCode(page, code);
    const facts = await whoAmI(page);
    assert.match(facts.aal, /^AAL2\b/);
    await shot("aal2");
  });
});

test("the seed's ?aal=aal2&via=phone: the code goes out by SMS at once, resend after the countdown, AAL2", async () => {
  await scenario("sms", async (page, shot) => {
    const person = newPerson();
    await registerOnPage(page, shot, person);
    await shot("second-step");

    await page.goto(`${server.publicUrl}/?aal=aal2&via=phone`);
    await heading(page, "Enter the code");
    assert.match(await page.getByTestId("sent-to").innerText(), /by SMS to \+49\*+\d{3}\./);
    assert.ok(await page.getByRole("button", { name: "Send a new code" }).isDisabled());
    await shot("code-sent");
    const first = await server.sms.nextCode(person.phoneE164);

    // The countdown runs out and the button comes back; a new code replaces the first.
    const resend = page.getByRole("button", { name: "Send a new code" });
    await page.waitForFunction(
      () => !(document.querySelector(".resend button") as HTMLButtonElement | null)?.disabled,
      undefined,
      { timeout: (RESEND_COOLDOWN_SECONDS + 5) * 1000 },
    );
    await resend.click();
    await page.getByText(/A new code is on its way by SMS/).waitFor();
    const second = await server.sms.nextCode(person.phoneE164);
    assert.ok(await resend.isDisabled(), "a fresh cooldown starts");
    await shot("resent");

    if (second !== first) {
      await enterCode(page, first);
      await page.getByText(REASON_TEXT[ErrorReason.CODE_INVALID]).waitFor();
      await shot("old-code-refused");
    }
    await enterCode(page, second);
    const facts = await whoAmI(page);
    assert.match(facts.aal, /^AAL2\b/);
    assert.match(facts.methods[1] ?? "", /^code by SMS\b/);
    assert.equal(facts.phone, `${person.phoneE164} (verified)`);
    await shot("aal2");
  });
});

test("field violations appear next to their inputs; a wrong password gets its own message", async () => {
  await scenario("errors", async (page, shot) => {
    const person = newPerson();
    await page.goto(`${server.publicUrl}/?view=register`);
    await heading(page, "Create your account");
    await register(page, { ...person, phone: "12" });
    await page.getByText(REASON_TEXT[ErrorReason.TRAITS_INVALID]).waitFor();
    const phone = page.getByLabel("Mobile phone (optional)");
    assert.equal(await phone.getAttribute("aria-invalid"), "true");
    assert.equal(await page.getByLabel("Email address").getAttribute("aria-invalid"), null);
    const errorId = ((await phone.getAttribute("aria-describedby")) ?? "").split(" ").find((id) => id.endsWith("-error"))!;
    const fieldError = page.locator(`#${errorId}`);
    assert.ok(await fieldError.isVisible(), "the phone's own error is shown");
    assert.notEqual((await fieldError.innerText()).trim(), "");
    await shot("phone-refused");

    await phone.fill(person.phone);
    await page.getByRole("button", { name: "Create account" }).click();
    await heading(page, "Second step");
    await page.getByRole("button", { name: "Sign out" }).click();
    await heading(page, "Sign in");

    await signIn(page, { ...person, password: "not the password at all" });
    await page.getByText(REASON_TEXT[ErrorReason.INVALID_CREDENTIALS]).waitFor();
    await shot("wrong-password");
  });
});
