// Forms with labelled inputs, an error slot under each input for the server's field violations,
// and one alert for everything else.
import type { ErrorReason } from "@twofold/sdk";
import { h } from "./dom.ts";
import { describe, type Problem } from "./messages.ts";

export interface FieldSpec {
  /** The server's field path (`traits.email`, `password`, `code`), so violations land here. */
  name: string;
  label: string;
  hint?: string;
  attributes: Record<string, string | boolean | number | undefined>;
}

export interface FormSpec {
  fields: FieldSpec[];
  submitLabel: string;
  onSubmit(values: Record<string, string>): Promise<void>;
  /** Reasons whose text belongs under one input rather than above the form. */
  reasonFields?: Partial<Record<ErrorReason, string>>;
  /** Reasons a view handles itself (by navigating away); answers true when it did. */
  onProblem?(problem: Problem): boolean;
}

interface Field {
  input: HTMLInputElement;
  error: HTMLElement;
}

export interface Form {
  element: HTMLFormElement;
  alert: HTMLElement;
  fields: Map<string, Field>;
  show(problem: Problem): void;
  clear(): void;
}

let counter = 0;

export function alertBox(): HTMLElement {
  return h("p", { class: "alert", role: "alert", hidden: true });
}

export function showAlert(alert: HTMLElement, text: string): void {
  alert.textContent = text;
  alert.hidden = text === "";
}

export function createForm(spec: FormSpec): Form {
  const form = h("form", { novalidate: true });
  const alert = alertBox();
  const fields = new Map<string, Field>();
  form.append(alert);
  for (const field of spec.fields) {
    const id = `field-${++counter}`;
    const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
    const hint = field.hint ? h("p", { class: "hint", id: `${id}-hint` }, field.hint) : undefined;
    const input = h("input", {
      id,
      name: field.name,
      "aria-describedby": [hint ? `${id}-hint` : "", `${id}-error`].join(" ").trim(),
      ...field.attributes,
    });
    form.append(h("div", { class: "field" }, h("label", { for: id }, field.label), input, hint, error));
    fields.set(field.name, { input, error });
  }
  const submit = h("button", { type: "submit", class: "primary" }, spec.submitLabel);
  form.append(submit);

  const clear = () => {
    showAlert(alert, "");
    for (const { input, error } of fields.values()) {
      input.removeAttribute("aria-invalid");
      error.hidden = true;
      error.textContent = "";
    }
  };

  const show = (problem: Problem) => {
    clear();
    const unplaced: string[] = [];
    const reasonField = problem.reason === undefined ? undefined : spec.reasonFields?.[problem.reason];
    const violations = reasonField ? [{ field: reasonField, description: problem.text }] : problem.fields;
    for (const violation of violations) {
      const field = fields.get(violation.field);
      if (!field) {
        unplaced.push(`${violation.field}: ${violation.description}`);
        continue;
      }
      field.input.setAttribute("aria-invalid", "true");
      field.error.textContent = capitalise(violation.description);
      field.error.hidden = false;
    }
    showAlert(alert, [reasonField ? "" : problem.text, ...unplaced].join(" ").trim());
    const firstInvalid = [...fields.values()].find(({ input }) => input.hasAttribute("aria-invalid"));
    firstInvalid?.input.focus();
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (submit.disabled) return;
    const missing = spec.fields.find((field) => field.attributes.required && !fields.get(field.name)!.input.value.trim());
    if (missing) {
      show({ text: `Please fill in ${missing.label.toLowerCase()}.`, fields: [{ field: missing.name, description: "is required" }] });
      return;
    }
    const values: Record<string, string> = {};
    for (const [name, { input }] of fields) values[name] = input.value;
    clear();
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    spec
      .onSubmit(values)
      .catch((err: unknown) => {
        const problem = describe(err);
        if (!spec.onProblem?.(problem)) show(problem);
      })
      .finally(() => {
        submit.disabled = false;
        form.removeAttribute("aria-busy");
      });
  });

  return { element: form, alert, fields, show, clear };
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
