// Debian's Chromium driven by playwright-core: Playwright cannot download its own browsers here.
import { mkdir, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

export const UI_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const DIST = join(UI_ROOT, "dist");
export const ARTIFACTS = join(UI_ROOT, "e2e/artifacts");
export const PHONE_VIEWPORT = { width: 375, height: 667 };

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** The browser from TWOFOLD_TEST_CHROMIUM; a missing one fails the test rather than skipping it. */
export async function launchChromium(): Promise<Browser> {
  const executablePath = process.env.TWOFOLD_TEST_CHROMIUM;
  if (!executablePath) {
    throw new Error('TWOFOLD_TEST_CHROMIUM is not set: run eval "$(scripts/chromium.sh)" in the repository first');
  }
  // launch() gives every run a fresh temporary profile and deletes it on close.
  return chromium.launch({ executablePath, headless: true, args: ARGS });
}

export async function freshArtifacts(): Promise<void> {
  await rm(ARTIFACTS, { recursive: true, force: true });
  await mkdir(ARTIFACTS, { recursive: true });
}

/** A page at phone size whose console errors and uncaught exceptions are collected. */
export async function phonePage(browser: Browser): Promise<{ context: BrowserContext; page: Page; problems: string[] }> {
  const context = await browser.newContext({ viewport: PHONE_VIEWPORT, deviceScaleFactor: 1, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  return { context, page, problems };
}

/** Numbered screenshots per scenario, so the artefacts read as a story. */
export function screenshots(page: Page, scenario: string): (step: string) => Promise<void> {
  let step = 0;
  return async (name: string) => {
    step += 1;
    const file = `${scenario}-${String(step).padStart(2, "0")}-${name}.png`;
    await page.screenshot({ path: join(ARTIFACTS, file), fullPage: true });
  };
}
