// "Who am I": the session's AAL, the factors it was built from and the identity's addresses.
import { AuthenticatorAssuranceLevel, ErrorReason, type Session } from "@twofold/sdk";
import { h } from "../dom.ts";
import { aalMeaning, aalName, channelText, methodName, timeText } from "../format.ts";
import { alertBox, showAlert } from "../form.ts";
import { describe } from "../messages.ts";
import { LOGIN_SEARCH, secondFactorSearch } from "../router.ts";
import { signOutButton } from "../sign-out.ts";
import { link, notice, page, type ViewContext } from "../view.ts";

export async function homeView(context: ViewContext): Promise<Node> {
  const { api } = context;
  if (!api.tokens.get()) {
    context.navigate(LOGIN_SEARCH, { replace: true, notice: context.notice });
    return document.createDocumentFragment();
  }
  try {
    // No required_aal: the server's session.whoami.required_aal decides (Kratos's
    // highest_available), so an AAL1 session of someone with a code address is sent on.
    const { session } = await api.client.sessions.whoAmI({});
    return whoAmIPage(context, session!);
  } catch (err) {
    const problem = describe(err);
    if (problem.reason === ErrorReason.SESSION_AAL2_REQUIRED) {
      context.navigate(secondFactorSearch(), { replace: true, notice: context.notice });
      return document.createDocumentFragment();
    }
    if (problem.reason === ErrorReason.SESSION_INACTIVE) {
      api.tokens.clear();
      context.navigate(LOGIN_SEARCH, { replace: true, notice: problem.text });
      return document.createDocumentFragment();
    }
    const alert = alertBox();
    showAlert(alert, problem.text);
    return page("Who am I", undefined, alert, h("button", { type: "button", onclick: () => context.navigate("") }, "Try again"));
  }
}

function whoAmIPage(context: ViewContext, session: Session): Node {
  const identity = session.identity;
  const traits = (identity?.traits ?? {}) as Record<string, unknown>;
  const verified = new Set(identity?.verifiableAddresses.filter((address) => address.verified).map((address) => address.trait));
  const trait = (name: string) => {
    const value = traits[name];
    if (typeof value !== "string" || value === "") return "—";
    return verified.has(name) ? `${value} (verified)` : value;
  };

  const methods = h(
    "ol",
    { class: "methods", "data-testid": "methods" },
    ...session.authenticationMethods.map((method) =>
      h(
        "li",
        {},
        h("strong", {}, methodName(method)),
        ` ${channelText(method.channel)}`.trimEnd(),
        h("span", { class: "muted" }, ` · ${aalName(method.aal)} · ${timeText(method.completedAt)}`),
      ),
    ),
  );
  const alert = alertBox();
  const signOut = signOutButton(context, alert);

  const single = session.aal !== AuthenticatorAssuranceLevel.AAL2;
  return page(
    "You are signed in",
    undefined,
    notice(context.notice),
    alert,
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Assurance level"),
      h("dd", { "data-testid": "aal" }, h("strong", {}, aalName(session.aal)), ` (${aalMeaning(session.aal)})`),
      h("dt", {}, "Signed in with"),
      h("dd", {}, methods),
      h("dt", {}, "Email"),
      h("dd", { "data-testid": "email" }, trait("email")),
      h("dt", {}, "Phone"),
      h("dd", { "data-testid": "phone" }, trait("phone")),
      h("dt", {}, "Session ends"),
      h("dd", {}, timeText(session.expiresAt)),
    ),
    single && h("p", { class: "actions" }, link(context, secondFactorSearch(), "Add a second factor", { class: "button primary" })),
    h("p", { class: "actions" }, signOut),
  );
}
