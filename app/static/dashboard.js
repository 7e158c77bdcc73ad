// The handoff dashboard: plain JavaScript ES modules, no build step, no dependencies.
//
// Everything shown comes from the JSON API, called with the API token (every client) or a
// client key (`hk_…`, that client alone) as a bearer token; the page calls only routes a
// client key may call too, and the API scopes every answer. Data is only ever written with
// textContent (see el() in dashboard-dom.js), never as markup, so a message's text cannot
// inject HTML into the page.
//
// This module wires the page up; the others hold one part each:
//   dashboard-state.js     the server's job statuses, the page's settings and its state
//   dashboard-dom.js       small DOM helpers        dashboard-format.js   times and durations
//   dashboard-api.js       the API and its errors   dashboard-session.js  signing in and out
//   dashboard-sync.js      clients, leads, Sync     dashboard-follow.js   the last sync's jobs
//   dashboard-overview.js  the queue overview       dashboard-jobs.js     the jobs table
//   dashboard-chart.js     the last hour's chart    dashboard-refresh.js  polling
//   dashboard-lead.js      the lead view
// Some of them import each other both ways; that is safe because none calls into another
// while loading: they only do so from start() below and from the events it wires.

import { token } from "./dashboard-api.js";
import { watchChartSize } from "./dashboard-chart.js";
import { $, setMessage } from "./dashboard-dom.js";
import { refreshJobs } from "./dashboard-jobs.js";
import { showLead } from "./dashboard-lead.js";
import { refreshNow } from "./dashboard-refresh.js";
import { showSignIn, signIn, signOut, takeTokenFromAddress } from "./dashboard-session.js";
import { state, TOKEN_KEY } from "./dashboard-state.js";
import { loadLeads, showProviders, submitSync } from "./dashboard-sync.js";

function start() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const given = $("token-input").value.trim();
    if (!given) {
      setMessage($("signin-error"), "Enter the API token or a client key.", "error");
      $("token-input").focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, given);
    signIn();
  });
  $("sign-out").addEventListener("click", () => signOut("Signed out."));
  $("sync-form").addEventListener("submit", submitSync);
  $("client-select").addEventListener("change", () => {
    showProviders();
    loadLeads("");
  });
  $("lead-select").addEventListener("change", () => showLead($("lead-select").value));
  $("lead-refresh").addEventListener("click", () => showLead(state.leadId));
  $("jobs-filter").addEventListener("change", refreshJobs);
  $("jobs-filter").addEventListener("submit", (event) => event.preventDefault());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshNow();
  });
  watchChartSize();

  takeTokenFromAddress();
  if (token()) signIn();
  else showSignIn("");
}

start();
