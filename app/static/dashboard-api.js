// The JSON API, called with the tab's API token or client key as a bearer token, and the
// banner that shows what background refreshes could not get from it.

import { $ } from "./dashboard-dom.js";
import { signOut } from "./dashboard-session.js";
import { root, state, TOKEN_KEY } from "./dashboard-state.js";

export class ApiError extends Error {
  constructor(status, body) {
    const detail =
      body && typeof body.detail === "string" && body.detail
        ? body.detail
        : `The service answered with HTTP ${status}.`;
    super(detail);
    this.status = status;
    this.code = body && typeof body.error === "string" ? body.error : "http_error";
    this.body = body || {};
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${token()}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(root + path, init);
  } catch {
    throw new ApiError(0, {
      error: "unreachable",
      detail: "The service cannot be reached. Check that it is running; retrying shortly.",
    });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    // A rejected token signs the tab out wherever it is noticed, with the API's reason.
    if (response.status === 401 && state.signedIn) signOut(error.message);
    throw error;
  }
  return data;
}

// Errors from background refreshes go to one banner, one line per source, and clear
// themselves once that source succeeds again.
export function reportError(source, error) {
  if (error) state.errors.set(source, error.message || String(error));
  else state.errors.delete(source);
  const banner = $("app-error");
  const lines = [...state.errors.values()];
  banner.hidden = lines.length === 0;
  banner.textContent = [...new Set(lines)].join(" ");
}
