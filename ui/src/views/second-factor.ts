// The second step (the seed's `?aal=aal2&via=phone`): an AAL2 login flow for the signed-in
// session, the address to send a code to, then the code.
import { AuthenticatorAssuranceLevel, ErrorReason, FlowState, type LoginFlow } from "@twofold/sdk";
import { fill, h } from "../dom.ts";
import { channelText, timestampMs } from "../format.ts";
import { alertBox, createForm, showAlert } from "../form.ts";
import { describe, waitText, type Problem } from "../messages.ts";
import { HOME_SEARCH, loginSearch, secondFactorSearch } from "../router.ts";
import { signOutButton } from "../sign-out.ts";
import { link, notice, page, type ViewContext } from "../view.ts";

const TITLE = "Second step";

export async function secondFactorView(context: ViewContext): Promise<Node> {
  const { api } = context;
  const via = context.route.name === "second-factor" ? context.route.via : undefined;
  const here = secondFactorSearch(via);
  if (!api.tokens.get()) {
    context.navigate(loginSearch(here), { replace: true, notice: "Sign in with your password first." });
    return document.createDocumentFragment();
  }
  let flow: LoginFlow;
  try {
    const created = await api.client.flows.createLoginFlow({ requestedAal: AuthenticatorAssuranceLevel.AAL2, via });
    flow = created.flow!;
  } catch (err) {
    const problem = describe(err);
    if (leaveFor(context, problem, here)) return document.createDocumentFragment();
    const alert = alertBox();
    showAlert(alert, problem.text);
    return page(TITLE, undefined, alert, otherWays(context, via, []), footer(context, alertBox()));
  }
  const root = h("div", { class: "step" });
  new SecondFactor(context, root, flow, via).render(context.notice);
  return root;
}

/** Problems that end the step: sign in again, or the step is already done. */
function leaveFor(context: ViewContext, problem: Problem, here: string): boolean {
  switch (problem.reason) {
    case ErrorReason.SESSION_INACTIVE:
    case ErrorReason.SESSION_AAL1_REQUIRED:
      context.api.tokens.clear();
      context.navigate(loginSearch(here), { replace: true, notice: problem.text });
      return true;
    case ErrorReason.SESSION_ALREADY_AVAILABLE:
      context.navigate(HOME_SEARCH, { replace: true, notice: problem.text });
      return true;
    default:
      return false;
  }
}

class SecondFactor {
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly context: ViewContext,
    private readonly root: HTMLElement,
    private flow: LoginFlow,
    private readonly via: string | undefined,
  ) {
    context.signal.addEventListener("abort", () => this.#stopTimer());
  }

  render(message?: string): void {
    this.#stopTimer();
    if (this.flow.state === FlowState.CODE_SENT) this.#codeForm(message);
    else this.#choices(message);
  }

  #choices(message?: string): void {
    const alert = alertBox();
    const choices = this.flow.codeChoices;
    const buttons = choices.map((choice) => {
      const button = h(
        "button",
        { type: "button", class: "choice", "data-channel": channelText(choice.channel) },
        h("span", {}, `Send code to ${choice.maskedAddress}`),
        h("span", { class: "muted" }, channelText(choice.channel)),
      );
      button.addEventListener("click", () => {
        for (const other of buttons) other.disabled = true;
        this.context.api.client.flows
          .sendLoginCode({ flowId: this.flow.id, addressId: choice.addressId })
          .then(({ flow }) => {
            this.flow = flow!;
            this.render();
          })
          .catch((err: unknown) => {
            const problem = describe(err);
            if (leaveFor(this.context, problem, secondFactorSearch(this.via))) return;
            showAlert(alert, problem.text);
            for (const other of buttons) other.disabled = false;
          });
      });
      return button;
    });
    const lead =
      choices.length > 0
        ? "Your account has a second factor. Choose where we send a one-time code."
        : "Your account has no address that can receive a one-time code.";
    fill(
      this.root,
      page(
        TITLE,
        lead,
        notice(message),
        alert,
        h("ul", { class: "choices" }, ...buttons.map((button) => h("li", {}, button))),
        otherWays(this.context, this.via, [...new Set(choices.map((choice) => choice.trait))]),
        footer(this.context, alert),
      ),
    );
  }

  #codeForm(message?: string): void {
    const sentTo = this.flow.codeSentTo;
    const form = createForm({
      fields: [
        {
          name: "code",
          label: "One-time code",
          attributes: {
            type: "text",
            autocomplete: "one-time-code",
            inputmode: "numeric",
            pattern: "[0-9]*",
            maxlength: 12,
            required: true,
            spellcheck: "false",
            "data-autofocus": true,
          },
        },
      ],
      submitLabel: "Verify",
      reasonFields: { [ErrorReason.CODE_INVALID]: "code", [ErrorReason.CODE_SUBMITTED_TOO_OFTEN]: "code" },
      onSubmit: async (values) => {
        // People paste codes with spaces ("123 456"); the server wants the digits alone.
        const code = values.code!.replace(/\s+/g, "");
        await this.context.api.client.flows.submitLoginCode({ flowId: this.flow.id, code });
        // The answer's new token is in the store already (the SDK rotates it); the old one is dead.
        this.context.navigate(HOME_SEARCH, { notice: "Second step done." });
      },
      onProblem: (problem) => leaveFor(this.context, problem, secondFactorSearch(this.via)),
    });

    const resend = h("button", { type: "button", class: "link-button", disabled: true }, "Send a new code");
    const countdown = h("span", { class: "muted", "data-testid": "resend-countdown" });
    resend.addEventListener("click", () => {
      resend.disabled = true;
      this.context.api.client.flows
        .resendLoginCode({ flowId: this.flow.id })
        .then(({ flow }) => {
          this.flow = flow!;
          this.render(`A new code is on its way ${channelText(flow!.codeSentTo?.channel ?? 0)}. The previous one no longer works.`);
        })
        .catch((err: unknown) => {
          const problem = describe(err);
          if (leaveFor(this.context, problem, secondFactorSearch(this.via))) return;
          form.show(problem);
          const wait = problem.retryAfterMs;
          this.#countDown(resend, countdown, wait === undefined ? Date.now() : Date.now() + wait);
        });
    });

    fill(
      this.root,
      page(
        "Enter the code",
        h(
          "p",
          { class: "lead", "data-testid": "sent-to" },
          `We sent a code ${channelText(sentTo?.channel ?? 0)} to `,
          h("strong", {}, sentTo?.maskedAddress ?? "your address"),
          ".",
        ),
        notice(message),
        form.element,
        h("p", { class: "resend" }, resend, " ", countdown),
        otherWays(this.context, this.via, []),
        footer(this.context, form.alert),
      ),
    );
    this.#countDown(resend, countdown, timestampMs(this.flow.resendAvailableAt) ?? Date.now());
    form.fields.get("code")!.input.focus();
  }

  #countDown(button: HTMLButtonElement, label: HTMLElement, until: number): void {
    this.#stopTimer();
    const tick = () => {
      const left = until - Date.now();
      if (left <= 0) {
        this.#stopTimer();
        button.disabled = false;
        label.textContent = "";
        return;
      }
      button.disabled = true;
      label.textContent = `available in ${waitText(left)}`;
    };
    tick();
    if (button.disabled) this.#timer = setInterval(tick, 250);
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** Restart links: one address only (`via=<trait>`, as in the seed), or every address again. */
function otherWays(context: ViewContext, via: string | undefined, traits: string[]): Node | undefined {
  const links: Node[] = [];
  if (via || traits.length === 0) links.push(link(context, secondFactorSearch(), "Choose another address"));
  if (!via && traits.length > 1) {
    for (const trait of traits) links.push(link(context, secondFactorSearch(trait), `Use my ${trait} only`));
  }
  if (links.length === 0) return undefined;
  const list = h("ul", { class: "other-ways" });
  for (const item of links) list.append(h("li", {}, item));
  return h("nav", { "aria-label": "Other ways" }, list);
}

function footer(context: ViewContext, alert: HTMLElement): Node {
  return h("p", { class: "actions" }, signOutButton(context, alert));
}
