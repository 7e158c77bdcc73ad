// Signing in and out.

import { api, reportError } from "./dashboard-api.js";
import { $, setMessage } from "./dashboard-dom.js";
import { renderFollowed } from "./dashboard-follow.js";
import { poll } from "./dashboard-refresh.js";
import { state, TOKEN_KEY } from "./dashboard-state.js";
import { fillClients } from "./dashboard-sync.js";

// Takes `?token=` out of the address bar (and so out of history and bookmarks) and keeps it
// for this tab only.
export function takeTokenFromAddress() {
  const url = new URL(window.location.href);
  if (!url.searchParams.has("token")) return;
  const given = (url.searchParams.get("token") || "").trim();
  url.searchParams.delete("token");
  window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  if (given) sessionStorage.setItem(TOKEN_KEY, given);
}

export function showSignIn(message) {
  state.signedIn = false;
  $("app").hidden = true;
  $("account").hidden = true;
  $("signin").hidden = false;
  setMessage($("signin-error"), message || "", "error");
  $("token-input").focus();
}

export function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopTimers();
  // Whoever signs in next in this tab starts from a clean page.
  state.followGeneration += 1;
  state.followed = [];
  state.lastActivity = undefined;
  state.errors.clear();
  $("signed-in-as").hidden = true;
  renderFollowed();
  reportError("signout", null);
  for (const id of ["sync-message", "jobs-message"]) setMessage($(id), "");
  showSignIn(message);
}

// Checks the stored token with a real API call before showing anything behind it.
export async function signIn() {
  const button = $("signin-button");
  button.disabled = true;
  try {
    const data = await api("GET", "/api/clients");
    enter(data.clients || []);
  } catch (error) {
    if (error.status === 401) sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(error.message);
  } finally {
    button.disabled = false;
  }
}

function enter(clients) {
  state.signedIn = true;
  $("signin").hidden = true;
  $("token-input").value = "";
  setMessage($("signin-error"), "");
  $("account").hidden = false;
  $("app").hidden = false;
  fillClients(clients);
  poll();
}

function stopTimers() {
  clearTimeout(state.pollTimer);
  clearTimeout(state.followTimer);
  state.pollTimer = null;
  state.followTimer = null;
}
