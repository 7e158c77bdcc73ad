// The queue overview: the stats, the last hour's chart, the counts by type and status, the
// latest runner runs. With a client key the API answers for that client alone, and without
// runner runs (they drain every client's jobs): the panel says so instead of an empty table.

import { api, reportError } from "./dashboard-api.js";
import { renderChart } from "./dashboard-chart.js";
import { $, cell, el, emptyRow } from "./dashboard-dom.js";
import { formatDuration, timeNode } from "./dashboard-format.js";
import { showLead } from "./dashboard-lead.js";
import { FINISHED, STATUSES, state } from "./dashboard-state.js";

export async function refreshOverview() {
  const request = ++state.overviewRequest;
  try {
    const data = await api("GET", "/api/jobs/overview");
    if (request !== state.overviewRequest) return;
    renderOverview(data);
    reportError("overview", null);
  } catch (error) {
    if (error.status !== 401) reportError("overview", error);
  }
}

function renderOverview(data) {
  const total = (status) =>
    data.counts.filter((c) => c.status === status).reduce((n, c) => n + c.count, 0);
  $("stat-due").textContent = String(data.due);
  $("stat-oldest").textContent = data.due ? formatDuration(data.oldest_due_age_s * 1000) : "–";
  $("stat-running").textContent = String(total("running"));
  $("stat-failed").textContent = String(total("failed"));
  $("overview-updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  showScope(data.client_id);
  renderChart(data.last_hour || []);

  // The header (Type, one column per status, total) comes with the page, from the server.
  const byType = new Map();
  for (const c of data.counts) {
    if (!byType.has(c.type)) byType.set(c.type, {});
    byType.get(c.type)[c.status] = c.count;
  }
  const rows = [...byType.keys()].sort().map((type) => {
    const counts = byType.get(type);
    const sum = Object.values(counts).reduce((a, b) => a + b, 0);
    return el(
      "tr",
      {},
      el("th", { scope: "row" }, type),
      ...STATUSES.map((s) =>
        cell(s, el("span", { class: counts[s] ? "" : "muted" }, String(counts[s] || 0))),
      ),
      cell("total", String(sum)),
    );
  });
  const counts = $("counts-body");
  if (rows.length === 0) rows.push(emptyRow(counts, "No jobs yet."));
  counts.replaceChildren(...rows);

  const runs = data.runs.map((r) =>
    el(
      "tr",
      {},
      cell("Finished", timeNode(r.finished_at)),
      cell("Processed", String(r.processed)),
      cell("Succeeded", String(r.succeeded)),
      cell("Retried", String(r.retried)),
      cell("Failed", el("span", { class: r.failed ? "error" : "" }, String(r.failed))),
      cell("Left due", String(r.remaining_due)),
      cell("Took", formatDuration(r.duration_ms)),
      cell("Stopped", r.stop_reason),
    ),
  );
  const runsBody = $("runs-body");
  if (runs.length === 0) runs.push(emptyRow(runsBody, "The runner has not run yet."));
  runsBody.replaceChildren(...runs);

  // A runner finished, or one of the jobs in view did, since the last look: the open lead may
  // have new messages or a score. (A client key sees no runner runs; its finished jobs tell.)
  const newest = data.runs.length ? data.runs[0].invocation_id : null;
  const finished = data.counts.filter((c) => FINISHED.has(c.status));
  const activity = `${newest} ${finished.reduce((n, c) => n + c.count, 0)}`;
  if (state.lastActivity !== undefined && activity !== state.lastActivity && state.leadId) {
    showLead(state.leadId, { quiet: true });
  }
  state.lastActivity = activity;
}

// Whom the figures cover: every client (the API token) or one (a client key).
function showScope(clientId) {
  const scoped = clientId !== null && clientId !== undefined;
  const badge = $("signed-in-as");
  badge.textContent = scoped ? `Client key: ${clientId}` : "API token: all clients";
  badge.hidden = false;
  $("runs-panel").hidden = scoped;
  $("runs-note").hidden = !scoped;
}
