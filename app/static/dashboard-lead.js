// The lead view: a lead's score and stored messages.

import { api } from "./dashboard-api.js";
import { $, cell, el, setMessage } from "./dashboard-dom.js";
import { plural, timeNode } from "./dashboard-format.js";
import { state } from "./dashboard-state.js";
import { loadLeads } from "./dashboard-sync.js";

export async function openLead(clientId, leadId) {
  if (clientId && $("client-select").value !== clientId) {
    if (![...$("client-select").options].some((o) => o.value === clientId)) return;
    $("client-select").value = clientId;
    await loadLeads(leadId);
  } else {
    $("lead-select").value = leadId;
    await showLead(leadId);
  }
  $("lead").scrollIntoView({ behavior: "smooth", block: "start" });
  $("lead-title").focus({ preventScroll: true });
}

export async function showLead(leadId, { quiet = false } = {}) {
  state.leadId = leadId || "";
  const request = ++state.leadRequest;
  const hasLead = Boolean(leadId);
  $("lead-hint").hidden = hasLead;
  $("lead-body").hidden = !hasLead;
  $("lead-refresh").hidden = !hasLead;
  if (!hasLead) {
    $("lead-title").textContent = "Lead";
    return;
  }
  if (!quiet) {
    $("lead-title").textContent = `Lead: ${leadId}`;
    setMessage($("lead-message"), "Loading…");
  }
  const path = `/api/leads/${encodeURIComponent(leadId)}`;
  try {
    const [lead, list] = await Promise.all([api("GET", path), api("GET", `${path}/messages`)]);
    if (request !== state.leadRequest) return;
    renderLead(lead, list.messages || []);
  } catch (error) {
    if (request !== state.leadRequest) return;
    setMessage($("lead-message"), `Could not load the lead: ${error.message}`, "error");
  }
}

function renderLead(lead, messages) {
  $("lead-title").textContent = lead.name ? `Lead: ${lead.name} (${lead.id})` : `Lead: ${lead.id}`;
  const score = $("lead-score");
  if (lead.score === null || lead.score === undefined) {
    score.replaceChildren(el("span", { class: "muted" }, "Not scored yet."));
  } else {
    score.replaceChildren(
      el("span", { class: `badge score-${lead.score}` }, `Score ${lead.score} of 4`),
      lead.score_reason ? el("span", {}, ` ${lead.score_reason}`) : null,
    );
  }
  setMessage(
    $("lead-message"),
    messages.length ? plural(messages.length, "message", "messages") : "No messages stored yet.",
  );
  const rows = messages.map((m) =>
    el(
      "tr",
      { class: `direction-${m.direction}`, dataset: { messageId: m.id } },
      cell("Time", timeNode(m.sent_at)),
      cell("Channel", m.channel),
      cell("Direction", m.direction),
      cell("Text", el("span", { class: "message-text" }, m.text)),
    ),
  );
  $("messages-body").replaceChildren(...rows);
}
