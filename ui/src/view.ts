// What every view gets, and the card layout they share.
import type { Api } from "./api.ts";
import { h } from "./dom.ts";
import type { Route } from "./router.ts";

export interface NavigateOptions {
  replace?: boolean;
  /** Shown once by the next view (for example why the person was sent to sign in). */
  notice?: string;
}

export interface ViewContext {
  api: Api;
  route: Route;
  notice?: string;
  navigate(search: string, options?: NavigateOptions): void;
  /** Aborted when the person leaves the view: timers stop, late answers are dropped. */
  signal: AbortSignal;
}

export type View = (context: ViewContext) => Node | Promise<Node>;

export function page(title: string, lead: string | Node | undefined, ...content: (Node | false | undefined)[]): Node {
  const fragment = document.createDocumentFragment();
  fragment.append(
    h("p", { class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }, "2"), "Twofold"),
    h("h1", {}, title),
  );
  if (lead) fragment.append(typeof lead === "string" ? h("p", { class: "lead" }, lead) : lead);
  for (const node of content) if (node) fragment.append(node);
  return fragment;
}

export function notice(text: string | undefined): Node | undefined {
  return text ? h("p", { class: "notice", role: "status" }, text) : undefined;
}

/** A same-page link that navigates without reloading. */
export function link(context: ViewContext, search: string, text: string, attributes: Record<string, string> = {}): HTMLAnchorElement {
  return h("a", {
    href: search || location.pathname,
    ...attributes,
    onclick: (event: Event) => {
      const mouse = event as MouseEvent;
      if (mouse.ctrlKey || mouse.metaKey || mouse.shiftKey || mouse.button !== 0) return;
      event.preventDefault();
      context.navigate(search);
    },
  }, text);
}
