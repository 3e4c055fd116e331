// What a person does on the sign-in page, in the page's own words (labels, button names).
import assert from "node:assert/strict";
import type { Page } from "playwright-core";

export interface Person {
  email: string;
  phone: string;
  /** The phone as the server stores it (E.164), which is where the SMS goes. */
  phoneE164: string;
  password: string;
}

let counter = 0;

/** Emails start with "j" so the masked address reads j***@example.com, as in the brief. */
export function newPerson(): Person {
  counter += 1;
  const unique = `${Date.now().toString(36)}${process.pid.toString(36)}${counter}`;
  const digits = String(Math.floor(Math.random() * 1e8)).padStart(8, "0");
  return {
    email: `jane.${unique}@example.com`,
    phone: `+49 151 ${digits}`,
    phoneE164: `+49151${digits}`,
    password: "correct horse battery staple",
  };
}

export async function heading(page: Page, name: string): Promise<void> {
  await page.getByRole("heading", { level: 1, name }).waitFor();
}

export async function register(page: Page, person: Person): Promise<void> {
  await page.getByLabel("Email address").fill(person.email);
  await page.getByLabel("Mobile phone (optional)").fill(person.phone);
  await page.getByLabel("Password").fill(person.password);
  await page.getByRole("button", { name: "Create account" }).click();
}

export async function signIn(page: Page, person: Person): Promise<void> {
  await page.getByLabel("Email address").fill(person.email);
  await page.getByLabel("Password").fill(person.password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

export async function enterCode(page: Page, code: string): Promise<void> {
  const input = page.getByLabel("One-time code");
  assert.equal(await input.getAttribute("autocomplete"), "one-time-code");
  assert.equal(await input.getAttribute("inputmode"), "numeric");
  await input.fill(code);
  await page.getByRole("button", { name: "Verify" }).click();
}

/** The who-am-I view's facts, as shown. */
export async function whoAmI(page: Page): Promise<{ aal: string; methods: string[]; email: string; phone: string }> {
  await heading(page, "You are signed in");
  const text = async (testId: string) => ((await page.getByTestId(testId).innerText()) ?? "").trim();
  return {
    aal: await text("aal"),
    methods: (await page.getByTestId("methods").locator("li").allInnerTexts()).map((line) => line.trim()),
    email: await text("email"),
    phone: await text("phone"),
  };
}

/** A code of the same length that is certainly not `code`. */
export function wrongCode(code: string): string {
  return [...code].map((digit) => String((Number(digit) + 1) % 10)).join("");
}
