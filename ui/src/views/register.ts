import { h } from "../dom.ts";
import { createForm } from "../form.ts";
import { HOME_SEARCH, LOGIN_SEARCH } from "../router.ts";
import { link, notice, page, type ViewContext } from "../view.ts";

const MIN_PASSWORD_LENGTH = 8;

export function registerView(context: ViewContext): Node {
  const { api } = context;
  const form = createForm({
    fields: [
      {
        name: "traits.email",
        label: "Email address",
        attributes: { type: "email", autocomplete: "email", required: true, autocapitalize: "none", spellcheck: "false" },
      },
      {
        name: "traits.phone",
        label: "Mobile phone (optional)",
        hint: "With the country code, for example +49 151 12345678. Sign-in codes can go here by SMS.",
        attributes: { type: "tel", autocomplete: "tel" },
      },
      {
        name: "password",
        label: "Password",
        hint: `At least ${MIN_PASSWORD_LENGTH} characters.`,
        attributes: { type: "password", autocomplete: "new-password", required: true, minlength: MIN_PASSWORD_LENGTH },
      },
    ],
    submitLabel: "Create account",
    async onSubmit(values) {
      const traits: Record<string, string> = { email: values["traits.email"]!.trim() };
      const phone = values["traits.phone"]!.trim();
      if (phone) traits.phone = phone;
      const { flow } = await api.client.flows.createRegistrationFlow({});
      await api.client.flows.submitRegistrationFlow({ flowId: flow!.id, traits, password: values.password! });
      context.navigate(HOME_SEARCH, { notice: "Your account is ready." });
    },
  });
  return page(
    "Create your account",
    "An email address and a password; add a phone to get sign-in codes by SMS.",
    notice(context.notice),
    form.element,
    h("p", { class: "switch" }, "Already registered? ", link(context, LOGIN_SEARCH, "Sign in")),
  );
}
