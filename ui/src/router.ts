// Routes live in the query string of the one page, so the seed's `?aal=aal2&via=phone` works and
// the static server needs no fallback for unknown paths.
export type Route =
  | { name: "home"; notice?: string }
  | { name: "login"; returnTo?: string }
  | { name: "register" }
  | { name: "second-factor"; via?: string };

export function parseRoute(search: string): Route {
  const params = new URLSearchParams(search);
  if (params.get("aal") === "aal2") {
    const via = params.get("via")?.trim();
    return via ? { name: "second-factor", via } : { name: "second-factor" };
  }
  switch (params.get("view")) {
    case "login":
      return { name: "login", returnTo: safeReturnTo(params.get("return_to")) };
    case "register":
      return { name: "register" };
    default:
      return { name: "home" };
  }
}

export function secondFactorSearch(via?: string): string {
  const params = new URLSearchParams({ aal: "aal2" });
  if (via) params.set("via", via);
  return `?${params}`;
}

export function loginSearch(returnTo?: string): string {
  const params = new URLSearchParams({ view: "login" });
  if (returnTo) params.set("return_to", returnTo);
  return `?${params}`;
}

export const HOME_SEARCH = "";
export const LOGIN_SEARCH = "?view=login";
export const REGISTER_SEARCH = "?view=register";

/** Only this page's own second-factor step may follow a sign-in: no open redirect. */
function safeReturnTo(value: string | null): string | undefined {
  if (!value || !value.startsWith("?")) return undefined;
  return parseRoute(value).name === "second-factor" ? value : undefined;
}
