import { AuthenticatorAssuranceLevel, ErrorReason } from "@twofold/sdk";
import { h } from "../dom.ts";
import { createForm } from "../form.ts";
import { HOME_SEARCH, REGISTER_SEARCH } from "../router.ts";
import { link, notice, page, type ViewContext } from "../view.ts";

export function loginView(context: ViewContext): Node {
  const { api } = context;
  const returnTo = context.route.name === "login" ? context.route.returnTo : undefined;
  const form = createForm({
    fields: [
      {
        name: "identifier",
        label: "Email address",
        attributes: { type: "email", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" },
      },
      {
        name: "password",
        label: "Password",
        attributes: { type: "password", autocomplete: "current-password", required: true },
      },
    ],
    submitLabel: "Sign in",
    async onSubmit(values) {
      // A token from an earlier sign-in in this tab would make the server answer
      // SESSION_ALREADY_AVAILABLE; signing in again replaces it.
      api.tokens.clear();
      const { flow } = await api.client.flows.createLoginFlow({ requestedAal: AuthenticatorAssuranceLevel.AAL1 });
      await api.client.flows.submitLoginPassword({
        flowId: flow!.id,
        identifier: values.identifier!.trim(),
        password: values.password!,
      });
      // The home view asks who is signed in and sends the person on to the second step when the
      // server requires it.
      context.navigate(returnTo ?? HOME_SEARCH);
    },
    onProblem(problem) {
      if (problem.reason !== ErrorReason.SESSION_ALREADY_AVAILABLE) return false;
      context.navigate(HOME_SEARCH);
      return true;
    },
  });
  return page(
    "Sign in",
    "Sign in with your email address and password.",
    notice(context.notice),
    form.element,
    h("p", { class: "switch" }, "No account yet? ", link(context, REGISTER_SEARCH, "Create one")),
  );
}
