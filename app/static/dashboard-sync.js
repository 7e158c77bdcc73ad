// Clients, leads and the Sync form.

import { api, reportError } from "./dashboard-api.js";
import { $, el, setMessage } from "./dashboard-dom.js";
import { follow } from "./dashboard-follow.js";
import { showLead } from "./dashboard-lead.js";
import { refreshNow } from "./dashboard-refresh.js";

// The last client list, by id: each client's provider kinds, shown under the select.
const providersOf = new Map();
const CHANNEL_NAMES = { sms: "SMS", email: "Email", ai: "AI" };

export function showProviders() {
  const providers = providersOf.get($("client-select").value) || {};
  const parts = Object.entries(CHANNEL_NAMES).map(([channel, name]) => {
    const p = providers[channel];
    if (!p || !p.kind) return `${name}: none`;
    return `${name}: ${p.kind} (${p.account === "own" ? "own account" : "global"})`;
  });
  $("client-providers").textContent = parts.join(" · ");
}

export function fillClients(clients) {
  providersOf.clear();
  for (const c of clients) providersOf.set(c.id, c.providers || {});
  const select = $("client-select");
  const previous = select.value;
  select.replaceChildren(
    ...clients.map((c) => el("option", { value: c.id }, c.name ? `${c.name} (${c.id})` : c.id)),
  );
  const none = clients.length === 0;
  $("sync-button").disabled = none;
  if (none) {
    setMessage($("sync-message"), "No clients yet: add one with POST /api/clients.");
    return;
  }
  if (clients.some((c) => c.id === previous)) select.value = previous;
  showProviders();
  loadLeads();
}

export async function loadLeads(selectLead) {
  const clientId = $("client-select").value;
  const select = $("lead-select");
  const keep = selectLead ?? select.value;
  select.replaceChildren(el("option", { value: "" }, "All leads of the client"));
  if (!clientId) return;
  try {
    const data = await api(
      "GET",
      `/api/leads?client_id=${encodeURIComponent(clientId)}&limit=1000`,
    );
    if ($("client-select").value !== clientId) return;
    for (const lead of data.leads || []) {
      const label = lead.name ? `${lead.name} (${lead.id})` : lead.id;
      select.append(el("option", { value: lead.id }, label));
    }
    reportError("leads", null);
  } catch (error) {
    reportError("leads", error);
  }
  select.value = [...select.options].some((o) => o.value === keep) ? keep : "";
  showLead(select.value);
}

export async function submitSync(event) {
  event.preventDefault();
  const button = $("sync-button");
  // Disabled at once, before any await: a second click of a double click lands on a
  // disabled button. The server deduplicates anyway; this just saves the request.
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.textContent = "Syncing…";
  const body = { client_id: $("client-select").value };
  const leadId = $("lead-select").value;
  if (leadId) body.lead_id = leadId;
  try {
    const data = await api("POST", "/sync", body);
    follow(data.jobs || []);
    refreshNow();
  } catch (error) {
    setMessage($("sync-message"), `Sync not started: ${error.message}`, "error");
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = "Sync";
  }
}
