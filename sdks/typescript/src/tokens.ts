/** Where a token outlives the page: `sessionStorage`, `localStorage`, or anything shaped like them. */
export type TokenStorage = Pick<Storage, "getItem" | "setItem" | "removeItem">;

export interface SessionTokenStoreOptions {
  storage?: TokenStorage;
  /** Storage key; defaults to "twofold.session_token". */
  key?: string;
}

/**
 * Holds the current session token. The token interceptor reads it for every call and replaces it
 * whenever the server rotates it, so the application only ever reads or clears it.
 */
export class SessionTokenStore {
  readonly #storage: TokenStorage | undefined;
  readonly #key: string;
  readonly #listeners = new Set<(token?: string) => void>();
  #token: string | undefined;

  constructor(options: SessionTokenStoreOptions = {}) {
    this.#storage = options.storage;
    this.#key = options.key ?? "twofold.session_token";
    this.#token = this.#storage?.getItem(this.#key) || undefined;
  }

  get(): string | undefined {
    return this.#token;
  }

  set(token: string | undefined): void {
    const next = token || undefined;
    if (next === this.#token) return;
    this.#token = next;
    if (next === undefined) this.#storage?.removeItem(this.#key);
    else this.#storage?.setItem(this.#key, next);
    for (const listener of [...this.#listeners]) listener(next);
  }

  clear(): void {
    this.set(undefined);
  }

  /** Calls `listener` on every change; returns the function that unsubscribes it. */
  subscribe(listener: (token?: string) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }
}
