import "./style.css";
import { createApi } from "./api.ts";
import { fill, h } from "./dom.ts";
import { parseRoute, type Route } from "./router.ts";
import type { NavigateOptions, View, ViewContext } from "./view.ts";
import { homeView } from "./views/home.ts";
import { loginView } from "./views/login.ts";
import { registerView } from "./views/register.ts";
import { secondFactorView } from "./views/second-factor.ts";

const VIEWS: Record<Route["name"], View> = {
  home: homeView,
  login: loginView,
  register: registerView,
  "second-factor": secondFactorView,
};

const TITLES: Record<Route["name"], string> = {
  home: "Your session",
  login: "Sign in",
  register: "Create account",
  "second-factor": "Second step",
};

const card = document.getElementById("app")!;
const api = createApi();
let current: AbortController | undefined;

function navigate(search: string, options: NavigateOptions = {}): void {
  const url = `${location.pathname}${search}`;
  if (options.replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  void render(options.notice);
}

async function render(notice?: string): Promise<void> {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const route = parseRoute(location.search);
  document.title = `${TITLES[route.name]} · Twofold`;
  card.setAttribute("aria-busy", "true");
  const context: ViewContext = { api, route, notice, navigate, signal: controller.signal };
  let content: Node;
  try {
    content = await VIEWS[route.name](context);
  } catch (err) {
    console.error(err);
    content = h("p", { class: "alert", role: "alert" }, "This page failed to load. Reload to try again.");
  }
  // A view that navigated elsewhere while loading has been replaced already.
  if (controller.signal.aborted) return;
  card.removeAttribute("aria-busy");
  fill(card, content);
  // Keyboard and screen-reader users land on the new view, not on a removed element.
  const target = card.querySelector<HTMLElement>("[data-autofocus]") ?? card.querySelector("h1");
  if (target) {
    if (target.tagName === "H1") target.tabIndex = -1;
    target.focus({ preventScroll: true });
  }
}

addEventListener("popstate", () => void render());
void render();
