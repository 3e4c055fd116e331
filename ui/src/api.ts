// One client for the whole page. The API lives at the page's own origin when `twofold serve`
// serves the page; the Vite dev server points elsewhere with VITE_TWOFOLD_API or `?api=`.
import { SessionTokenStore, createTwofoldClient, createWebTransport, type TwofoldClient } from "@twofold/sdk";

const API_OVERRIDE_KEY = "twofold.api";

/**
 * `?api=` is honoured by the dev server only: a built page that let any link choose where it
 * posts passwords would be a phishing tool (its CSP would block it as well).
 */
export function apiBaseUrl(location: Location, storage: Storage): string {
  if (import.meta.env.DEV) {
    const requested = new URLSearchParams(location.search).get("api");
    if (requested && /^https?:\/\/[^/?#]+\/?$/.test(requested)) storage.setItem(API_OVERRIDE_KEY, requested);
    const remembered = storage.getItem(API_OVERRIDE_KEY);
    if (remembered) return remembered;
  }
  const configured = import.meta.env.VITE_TWOFOLD_API as string | undefined;
  return configured || location.origin;
}

export interface Api {
  client: TwofoldClient;
  tokens: SessionTokenStore;
  baseUrl: string;
}

export function createApi(): Api {
  // sessionStorage: the session ends with the tab, and other tabs cannot read the token.
  const tokens = new SessionTokenStore({ storage: sessionStorage });
  const baseUrl = apiBaseUrl(location, sessionStorage);
  const client = createTwofoldClient(createWebTransport({ baseUrl, tokens }));
  return { client, tokens, baseUrl };
}
