import { ErrorReason } from "@twofold/sdk";
import { h } from "./dom.ts";
import { showAlert } from "./form.ts";
import { describe } from "./messages.ts";
import { LOGIN_SEARCH } from "./router.ts";
import type { ViewContext } from "./view.ts";

/** Ends the session on the server (Logout), then forgets its token. */
export function signOutButton(context: ViewContext, alert: HTMLElement): HTMLButtonElement {
  const button = h("button", { type: "button", class: "secondary" }, "Sign out");
  button.addEventListener("click", () => {
    button.disabled = true;
    context.api.client.sessions
      .logout({})
      .catch((err: unknown) => {
        // A session that already ended is as signed out as it gets.
        if (describe(err).reason !== ErrorReason.SESSION_INACTIVE) throw err;
      })
      .then(() => {
        context.api.tokens.clear();
        context.navigate(LOGIN_SEARCH, { notice: "You are signed out." });
      })
      .catch((err: unknown) => {
        showAlert(alert, describe(err).text);
        button.disabled = false;
      });
  });
  return button;
}
