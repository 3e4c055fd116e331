// Reads login codes back from the Mailpit instance that `scripts/mailpit.sh` starts.
export interface Mailpit {
  smtp: { host: string; port: number };
  api: string;
}

/** Mailpit from the environment; a missing one fails the test, since the test command provides it. */
export function mailpitFromEnv(): Mailpit {
  const smtp = process.env.TWOFOLD_TEST_MAILPIT_SMTP;
  const api = process.env.TWOFOLD_TEST_MAILPIT_API;
  if (!smtp || !api) {
    throw new Error(
      'TWOFOLD_TEST_MAILPIT_SMTP and TWOFOLD_TEST_MAILPIT_API are not set: run eval "$(scripts/mailpit.sh)" in the repository first',
    );
  }
  const [host, port] = smtp.split(":");
  return { smtp: { host: host!, port: Number(port) }, api: api.replace(/\/$/, "") };
}

interface Summary {
  ID: string;
}

/** The code in the first email to `to` whose ID is not in `seen` (which it then joins). */
export async function nextEmailCode(mailpit: Mailpit, to: string, seen = new Set<string>(), timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const query = new URLSearchParams({ query: `to:"${to}"` });
    const listing = await getJson<{ messages: Summary[] }>(`${mailpit.api}/api/v1/search?${query}`);
    const fresh = listing.messages.find((message) => !seen.has(message.ID));
    if (fresh) {
      seen.add(fresh.ID);
      const message = await getJson<{ Text: string }>(`${mailpit.api}/api/v1/message/${fresh.ID}`);
      // The templates put the code on a line of its own; only digits are a code.
      const code = /^\s*(\d{4,})\s*$/m.exec(message.Text)?.[1];
      if (!code) throw new Error(`no code in the email to ${to}: ${message.Text}`);
      return code;
    }
    if (Date.now() > deadline) throw new Error(`no email to ${to} in Mailpit within ${timeoutMs} ms`);
    await new Promise((done) => setTimeout(done, 100));
  }
}

async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}
