// Starts a real `twofold serve` on ephemeral ports with a fresh in-memory database, and a local
// HTTP server that stands in for the SMS webhook. Shared with the sign-in page's Playwright test.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export interface StartOptions {
  corsOrigins?: string[]; // serve.public.cors.allowed_origins
  smtp?: { host: string; port: number }; // email via this SMTP catcher; otherwise email_sender: log
  env?: Record<string, string>; // extra environment for the process (e.g. SERVE_PUBLIC_STATIC_DIR)
}
export interface SmsMessage {
  to: string;
  code: string;
  text: string;
}
export interface SmsInbox {
  url: string;
  messages: SmsMessage[];
  nextCode(to?: string, timeoutMs?: number): Promise<string>;
}
export interface TwofoldProcess {
  publicUrl: string;
  adminUrl: string;
  adminKey: string;
  sms: SmsInbox;
  log(): string;
  stop(): Promise<void>;
}

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5_000;

// Config overrides the server would read from the environment; a developer's shell (or CI) may
// export some of them, and a test server must run on exactly the configuration written here.
const CONFIG_ENV = /^(TWOFOLD_)?(DSN|CONFIG|REDIS_|SERVE_|SECRETS_|SESSION_|SELFSERVICE_|IDENTITY_|COURIER_|LOG_)/;

// A test runner that dies mid-test must not leave servers behind.
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export async function startTwofold(options: StartOptions = {}): Promise<TwofoldProcess> {
  const binary = process.env.TWOFOLD_BIN ?? join(REPO_ROOT, "target/debug/twofold");
  if (!existsSync(binary)) {
    throw new Error(`twofold binary not found at ${binary}: build it with cargo build (or set TWOFOLD_BIN)`);
  }
  const sms = await startSmsInbox();
  const dir = await mkdtemp(join(tmpdir(), "twofold-sdk-test-"));
  const adminKey = randomBytes(24).toString("hex");
  const configPath = join(dir, "config.yaml");
  // JSON is YAML, and JSON.stringify gets the quoting of the webhook template right.
  await writeFile(configPath, JSON.stringify(config(options, sms.url, adminKey), null, 2));

  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !CONFIG_ENV.test(key)) env[key] = value;
  }
  Object.assign(env, options.env);

  let output = "";
  const child = spawn(binary, ["serve", "--config", configPath], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  void exited.then(() => running.delete(child));

  const cleanup = async () => {
    await stopChild(child, exited);
    const closed = new Promise<void>((done) => sms.server.close(() => done()));
    // The courier's keep-alive connections would otherwise hold close() open.
    sms.server.closeAllConnections();
    await closed;
    await rm(dir, { recursive: true, force: true });
  };

  let addresses: { public: string; admin: string };
  try {
    addresses = await new Promise((resolveAddresses, reject) => {
      let pending = "";
      const timer = setTimeout(
        () => reject(new Error(`twofold did not report "twofold is serving" within ${START_TIMEOUT_MS} ms; its log:\n${output}`)),
        START_TIMEOUT_MS,
      );
      child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
      child.stdout!.on("data", (chunk: Buffer) => {
        const text = chunk.toString();
        output += text;
        pending += text;
        const lines = pending.split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) {
          const found = servingAddresses(line);
          if (found) {
            clearTimeout(timer);
            resolveAddresses(found);
          }
        }
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`twofold exited (${signal ?? `code ${code}`}) before serving; its log:\n${output}`));
      });
    });
  } catch (error) {
    await cleanup();
    throw error;
  }

  let stopped: Promise<void> | undefined;
  return {
    publicUrl: `http://${addresses.public}`,
    adminUrl: `http://${addresses.admin}`,
    adminKey,
    sms: sms.inbox,
    log: () => output,
    stop: () => (stopped ??= cleanup()),
  };
}

function config(options: StartOptions, smsUrl: string, adminKey: string) {
  const cors = options.corsOrigins ? { enabled: true, allowed_origins: options.corsOrigins } : { enabled: false };
  return {
    dsn: "memory",
    serve: {
      public: { host: "127.0.0.1", port: 0, base_url: "http://localhost", cors },
      admin: { host: "127.0.0.1", port: 0, api_keys: [adminKey] },
    },
    selfservice: { methods: { code: { mfa_enabled: true } } },
    courier: {
      channels: [
        {
          id: "sms",
          type: "http",
          request_config: {
            url: smsUrl,
            method: "POST",
            body: '{"to": "{{ template_data.to }}", "code": "{{ template_data.code }}", "text": {{ body | tojson }}}',
          },
        },
      ],
      sms_sender: "sms",
      ...(options.smtp
        ? {
            smtp: {
              connection_uri: `smtp://${options.smtp.host}:${options.smtp.port}/?disable_starttls=true`,
              from_address: "no-reply@example.com",
            },
            email_sender: "smtp",
          }
        : { email_sender: "log" }),
    },
    log: { format: "json" },
  };
}

// tracing's JSON puts the event's fields either at the top level or under `fields`.
function servingAddresses(line: string): { public: string; admin: string } | undefined {
  if (!line.includes("twofold is serving")) return undefined;
  try {
    const event = JSON.parse(line) as Record<string, unknown>;
    const fields = (event.fields ?? event) as Record<string, unknown>;
    if (typeof fields.public === "string" && typeof fields.admin === "string") {
      return { public: fields.public, admin: fields.admin };
    }
  } catch {
    // not a JSON line
  }
  return undefined;
}

async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((done) => (timer = setTimeout(() => done(true), STOP_GRACE_MS)));
  if (await Promise.race([exited.then(() => false), timedOut])) {
    child.kill("SIGKILL");
    await exited;
  }
  clearTimeout(timer);
}

async function startSmsInbox(): Promise<{ server: Server; url: string; inbox: SmsInbox }> {
  const messages: SmsMessage[] = [];
  const consumed = new Set<number>();
  const waiters = new Set<() => void>();

  const server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk: Buffer) => (body += chunk.toString()));
    request.on("end", () => {
      if (request.method !== "POST") {
        response.writeHead(405).end();
        return;
      }
      try {
        const parsed = JSON.parse(body) as Partial<SmsMessage>;
        messages.push({ to: String(parsed.to ?? ""), code: String(parsed.code ?? ""), text: String(parsed.text ?? "") });
      } catch {
        // Still recorded, so a broken template shows up in the test's failure instead of a retry loop.
        messages.push({ to: "", code: "", text: body });
      }
      response.writeHead(200, { "content-type": "application/json" }).end("{}");
      for (const wake of [...waiters]) wake();
    });
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", () => done()));
  const { port } = server.address() as AddressInfo;

  const take = (to?: string): string | undefined => {
    const index = messages.findIndex((message, i) => !consumed.has(i) && (to === undefined || message.to === to));
    if (index < 0) return undefined;
    consumed.add(index);
    return messages[index]!.code;
  };

  const inbox: SmsInbox = {
    url: `http://127.0.0.1:${port}/sms`,
    messages,
    nextCode(to?: string, timeoutMs = 10_000) {
      const now = take(to);
      if (now !== undefined) return Promise.resolve(now);
      return new Promise((resolveCode, reject) => {
        const wake = () => {
          const code = take(to);
          if (code === undefined) return;
          finish();
          resolveCode(code);
        };
        const timer = setTimeout(() => {
          finish();
          const seen = messages.map((message) => message.to).join(", ") || "none";
          reject(new Error(`no SMS${to ? ` to ${to}` : ""} within ${timeoutMs} ms (messages so far to: ${seen})`));
        }, timeoutMs);
        const finish = () => {
          clearTimeout(timer);
          waiters.delete(wake);
        };
        waiters.add(wake);
      });
    },
  };
  return { server, url: inbox.url, inbox };
}
