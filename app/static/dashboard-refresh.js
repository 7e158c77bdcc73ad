// Refreshing: the overview and the jobs table every few seconds while signed in.

import { refreshJobs } from "./dashboard-jobs.js";
import { refreshOverview } from "./dashboard-overview.js";
import { POLL_MS, state } from "./dashboard-state.js";

export async function poll() {
  clearTimeout(state.pollTimer);
  if (!state.signedIn) return;
  // A hidden tab does not poll; it catches up the moment it is shown again.
  if (!document.hidden) await Promise.all([refreshOverview(), refreshJobs()]);
  // An immediate refresh may have run beside this one: keep a single timer chain.
  clearTimeout(state.pollTimer);
  if (state.signedIn) state.pollTimer = setTimeout(poll, POLL_MS);
}

export function refreshNow() {
  if (state.signedIn) poll();
}
