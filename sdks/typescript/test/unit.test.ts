// The parts that need no server: token persistence and error decoding edge cases.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, ErrorReason, SessionTokenStore, twofoldError } from "@twofold/sdk";
import { ErrorInfoSchema, RetryInfoSchema } from "../src/gen/google/rpc/error_details_pb.ts";

class FakeStorage {
  readonly items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}

test("SessionTokenStore persists to storage and a new store picks the token up", () => {
  const storage = new FakeStorage();
  const first = new SessionTokenStore({ storage, key: "tok" });
  const seen: (string | undefined)[] = [];
  const unsubscribe = first.subscribe((token) => seen.push(token));

  first.set("abc");
  assert.equal(storage.getItem("tok"), "abc");
  assert.equal(new SessionTokenStore({ storage, key: "tok" }).get(), "abc");
  assert.equal(new SessionTokenStore({ storage }).get(), undefined, "another key is another token");

  first.set("abc"); // unchanged: no notification
  first.clear();
  assert.equal(storage.items.has("tok"), false);
  assert.equal(new SessionTokenStore({ storage, key: "tok" }).get(), undefined);

  unsubscribe();
  first.set("def");
  assert.deepEqual(seen, ["abc", undefined]);
});

function errorWith(reason: string, retrySeconds?: bigint): ConnectError {
  const details: ConstructorParameters<typeof ConnectError>[3] = [
    { desc: ErrorInfoSchema, value: { reason, domain: "twofold", metadata: { flow: "f1" } } },
  ];
  if (retrySeconds !== undefined) {
    details.push({ desc: RetryInfoSchema, value: { retryDelay: { seconds: retrySeconds, nanos: 500_000_000 } } });
  }
  return new ConnectError("try later", Code.ResourceExhausted, undefined, details);
}

test("twofoldError decodes reason, metadata and retry delay", () => {
  const err = twofoldError(errorWith("RATE_LIMITED", 2n));
  assert.equal(err?.reason, ErrorReason.RATE_LIMITED);
  assert.equal(err?.code, Code.ResourceExhausted);
  assert.equal(err?.message, "try later");
  assert.deepEqual(err?.metadata, { flow: "f1" });
  assert.equal(err?.retryAfterMs, 2500);
});

test("an unknown reason maps to UNSPECIFIED and keeps its name", () => {
  for (const name of ["SOMETHING_NEW", "toString", "0"]) {
    const err = twofoldError(errorWith(name));
    assert.equal(err?.reason, ErrorReason.UNSPECIFIED, name);
    assert.equal(err?.reasonName, name);
  }
});

test("errors without Twofold's ErrorInfo are not Twofold errors", () => {
  assert.equal(twofoldError(new Error("boom")), undefined);
  assert.equal(twofoldError(new ConnectError("network", Code.Unavailable)), undefined);
  const foreign = new ConnectError("x", Code.Internal, undefined, [
    { desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason: "CODE_INVALID", domain: "example.com" }) },
  ]);
  assert.equal(twofoldError(foreign), undefined);
});

test("the browser entry point reaches no Node-only module", async () => {
  const { readFile } = await import("node:fs/promises");
  const { dirname, resolve } = await import("node:path");
  const { fileURLToPath } = await import("node:url");
  const dist = resolve(dirname(fileURLToPath(import.meta.url)), "../dist");
  const seen = new Set<string>();
  const bare = new Set<string>();
  const walk = async (file: string): Promise<void> => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = await readFile(file, "utf8");
    for (const [, spec] of source.matchAll(/(?:import|export)[^"']*?from\s*["']([^"']+)["']/g)) {
      if (spec!.startsWith(".")) await walk(resolve(dirname(file), spec!));
      else bare.add(spec!);
    }
  };
  await walk(resolve(dist, "index.js"));
  assert.ok(seen.size > 5, "the walk followed the re-exports");
  const nodeOnly = [...bare].filter((spec) => spec.startsWith("node:") || spec === "@connectrpc/connect-node");
  assert.deepEqual(nodeOnly, [], `imported from dist/index.js: ${[...bare].join(", ")}`);
});
