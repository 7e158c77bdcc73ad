// The handoff dashboard: plain JavaScript, no build step, no dependencies.
//
// Everything shown comes from the JSON API with the API token as a bearer token. Data is
// only ever written with textContent (see el() below), never as markup, so a message's text
// cannot inject HTML into the page.
"use strict";

(() => {
  const TOKEN_KEY = "handoff.apiToken";
  const STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"];
  const TYPES = [
    "conversation_sync",
    "sync_all",
    "email_inbound",
    "lead_scoring",
    "followups_tick",
    "reactivations_tick",
    "followup_send",
    "reactivation_send",
  ];
  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
  // Within the 2-3 s refresh window; jobs started from this page are followed faster.
  const POLL_MS = 2500;
  const FOLLOW_MS = 1000;
  const JOBS_LIMIT = 100;

  const root = document.body.dataset.root || "";
  const $ = (id) => document.getElementById(id);

  const state = {
    signedIn: false,
    pollTimer: null,
    followTimer: null,
    // Bumped on every new sync and on sign-out, so a late answer about an older set of
    // followed jobs is dropped instead of drawn over the newer one.
    followGeneration: 0,
    followed: [],
    overviewRequest: 0,
    jobsRequest: 0,
    leadRequest: 0,
    busyJobs: new Set(),
    // undefined until the first overview arrives; null while the runner has never run.
    lastRunId: undefined,
    leadId: "",
    errors: new Map(),
  };

  // ---- small DOM helpers ------------------------------------------------------------------

  // Builds an element; string children become text nodes, so data is never parsed as HTML.
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // A table cell that carries its column name, which the phone layout shows as a label; its
  // content sits in one wrapper so that layout has exactly two parts, label and value.
  function cell(label, ...children) {
    return el("td", { "data-label": label }, el("div", { class: "value" }, ...children));
  }

  function setMessage(node, text, kind) {
    node.textContent = text || "";
    node.classList.toggle("error", kind === "error");
    node.classList.toggle("ok", kind === "ok");
  }

  function statusBadge(status) {
    return el("span", { class: `badge status status-${status}` }, status);
  }

  // ---- formatting ---------------------------------------------------------------------------

  function parseTime(iso) {
    return iso ? new Date(iso) : null;
  }

  function timeNode(iso) {
    const at = parseTime(iso);
    if (!at || Number.isNaN(at.getTime())) return el("span", { class: "muted" }, "–");
    const sameDay = at.toDateString() === new Date().toDateString();
    const text = sameDay
      ? at.toLocaleTimeString()
      : at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    return el("time", { datetime: iso, title: at.toISOString() }, text);
  }

  function formatDuration(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
    if (ms < 0) ms = 0;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function jobDuration(job) {
    const started = parseTime(job.started_at);
    if (!started) return el("span", { class: "muted" }, "–");
    const finished = parseTime(job.finished_at);
    if (finished && finished >= started) return formatDuration(finished - started);
    if (job.status === "running") return `${formatDuration(Date.now() - started)} so far`;
    return el("span", { class: "muted" }, "–");
  }

  // Dedupe keys start with the job's type, which is shown beside them already.
  function shortKey(job) {
    const key = job.dedupe_key || "";
    return key.startsWith(`${job.type}:`) ? key.slice(job.type.length + 1) : key;
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  // ---- the API ------------------------------------------------------------------------------

  class ApiError extends Error {
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

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async function api(method, path, body) {
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
  function reportError(source, error) {
    if (error) state.errors.set(source, error.message || String(error));
    else state.errors.delete(source);
    const banner = $("app-error");
    const lines = [...state.errors.values()];
    banner.hidden = lines.length === 0;
    banner.textContent = [...new Set(lines)].join(" ");
  }

  // ---- signing in and out -------------------------------------------------------------------

  // Takes `?token=` out of the address bar (and so out of history and bookmarks) and keeps it
  // for this tab only.
  function takeTokenFromAddress() {
    const url = new URL(window.location.href);
    if (!url.searchParams.has("token")) return;
    const given = (url.searchParams.get("token") || "").trim();
    url.searchParams.delete("token");
    window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
    if (given) sessionStorage.setItem(TOKEN_KEY, given);
  }

  function showSignIn(message) {
    state.signedIn = false;
    $("app").hidden = true;
    $("account").hidden = true;
    $("signin").hidden = false;
    setMessage($("signin-error"), message || "", "error");
    $("token-input").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopTimers();
    // Whoever signs in next in this tab starts from a clean page.
    state.followGeneration += 1;
    state.followed = [];
    state.lastRunId = undefined;
    state.errors.clear();
    renderFollowed();
    reportError("signout", null);
    for (const id of ["sync-message", "jobs-message"]) setMessage($(id), "");
    showSignIn(message);
  }

  // Checks the stored token with a real API call before showing anything behind it.
  async function signIn() {
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

  // ---- clients, leads and the Sync form -----------------------------------------------------

  function fillClients(clients) {
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
    loadLeads();
  }

  async function loadLeads(selectLead) {
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

  async function submitSync(event) {
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

  // ---- following the jobs of the last sync --------------------------------------------------

  function follow(jobs) {
    state.followGeneration += 1;
    clearTimeout(state.followTimer);
    state.followed = jobs.map((j) => ({ ...j, fetched: false }));
    const joined = jobs.filter((j) => j.deduplicated).length;
    const created = jobs.length - joined;
    let text;
    if (jobs.length === 0) text = "Nothing to sync.";
    else if (joined === 0) text = `Started ${plural(created, "job", "jobs")}.`;
    else if (created === 0) text = `Already syncing: following ${plural(joined, "job", "jobs")}.`;
    else text = `Started ${plural(created, "job", "jobs")}; ${joined} already syncing.`;
    setMessage($("sync-message"), text, "ok");
    renderFollowed();
    followTick(state.followGeneration);
  }

  // Still worth asking about: not seen yet, or not finished (and not deleted meanwhile).
  function stillOpen(job) {
    return !job.gone && (!job.fetched || !FINISHED.has(job.status));
  }

  async function followTick(generation) {
    const pending = state.followed.filter(stillOpen);
    if (pending.length === 0) return;
    const answers = await Promise.allSettled(pending.map((j) => api("GET", `/api/jobs/${j.id}`)));
    if (generation !== state.followGeneration) return;
    let finishedLead = false;
    answers.forEach((answer, i) => {
      const job = pending[i];
      if (answer.status === "fulfilled") {
        const wasOpen = !FINISHED.has(job.status);
        Object.assign(job, answer.value, { fetched: true, error: null });
        if (wasOpen && FINISHED.has(job.status)) finishedLead ||= job.lead_id === state.leadId;
      } else {
        job.error = answer.reason.message;
        // A job that no longer exists (pruned) is not asked about again; others are retried.
        job.gone = answer.reason.status === 404;
      }
    });
    renderFollowed();
    if (finishedLead) showLead(state.leadId, { quiet: true });
    if (state.followed.some(stillOpen)) {
      state.followTimer = setTimeout(() => followTick(generation), FOLLOW_MS);
    } else {
      refreshNow();
    }
  }

  function renderFollowed() {
    const items = state.followed.map((job) => {
      const detail = [job.type];
      if (job.dedupe_key) detail.push(shortKey(job));
      if (job.fetched && job.attempts) detail.push(`attempt ${job.attempts} of ${job.max_attempts}`);
      return el(
        "li",
        { dataset: { jobId: job.id } },
        el(
          "div",
          { class: "followed-head" },
          statusBadge(job.status),
          el("strong", {}, `Job ${job.id}`),
          job.deduplicated
            ? el(
                "span",
                { class: "badge tag" },
                FINISHED.has(job.status) ? "was already syncing" : "already syncing",
              )
            : null,
        ),
        el("div", { class: "muted" }, detail.join(" · ")),
        job.status === "failed" && job.last_error
          ? el("div", { class: "error" }, job.last_error)
          : null,
        job.error ? el("div", { class: "error" }, `Could not refresh: ${job.error}`) : null,
      );
    });
    $("sync-jobs").replaceChildren(...items);
  }

  // ---- the queue overview -------------------------------------------------------------------

  async function refreshOverview() {
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

    $("counts-head").replaceChildren(
      el("th", { scope: "col" }, "Type"),
      ...STATUSES.map((s) => el("th", { scope: "col" }, s)),
      el("th", { scope: "col" }, "total"),
    );
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
    if (rows.length === 0) rows.push(emptyRow(STATUSES.length + 2, "No jobs yet."));
    $("counts-body").replaceChildren(...rows);

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
    if (runs.length === 0) runs.push(emptyRow(8, "The runner has not run yet."));
    $("runs-body").replaceChildren(...runs);

    // A runner finished since the last look: the open lead may have new messages or a score.
    const newest = data.runs.length ? data.runs[0].invocation_id : null;
    if (state.lastRunId !== undefined && newest !== state.lastRunId && state.leadId) {
      showLead(state.leadId, { quiet: true });
    }
    state.lastRunId = newest;
  }

  function emptyRow(span, text) {
    return el("tr", { class: "empty" }, el("td", { colspan: span }, text));
  }

  // ---- the jobs table -----------------------------------------------------------------------

  async function refreshJobs() {
    const request = ++state.jobsRequest;
    const params = new URLSearchParams({ limit: String(JOBS_LIMIT) });
    if ($("status-filter").value) params.set("status", $("status-filter").value);
    if ($("type-filter").value) params.set("type", $("type-filter").value);
    try {
      const data = await api("GET", `/api/jobs?${params}`);
      // A filter change started a newer request while this one was out: let that one draw.
      if (request !== state.jobsRequest) return;
      renderJobs(data.jobs || []);
      reportError("jobs", null);
    } catch (error) {
      if (request === state.jobsRequest && error.status !== 401) reportError("jobs", error);
    }
  }

  function renderJobs(jobs) {
    // Rows are rebuilt on every refresh; put keyboard focus back on the same control.
    const focusKey = document.activeElement?.dataset?.focusKey;
    const rows = jobs.map((job) => {
      const actions = [];
      if (job.status === "failed" || job.status === "cancelled") {
        actions.push(actionButton(job, "retry", "Retry"));
      }
      if (job.status === "pending") actions.push(actionButton(job, "cancel", "Cancel"));
      const lead = job.lead_id
        ? el(
            "button",
            {
              type: "button",
              class: "link",
              "aria-label": `Show lead ${job.lead_id}`,
              dataset: { focusKey: `lead:${job.id}` },
              onclick: () => openLead(job.client_id, job.lead_id),
            },
            job.lead_id,
          )
        : el("span", { class: "muted" }, job.client_id ? `client ${job.client_id}` : "–");
      return el(
        "tr",
        { dataset: { jobId: job.id, status: job.status } },
        cell("Job", el("span", { class: "mono" }, `#${job.id}`)),
        cell("Type", el("div", {}, job.type), el("div", { class: "muted small", title: job.dedupe_key }, shortKey(job))),
        cell("Status", statusBadge(job.status)),
        cell("Lead", lead),
        cell("Attempts", `${job.attempts} / ${job.max_attempts}`),
        cell("Run at", timeNode(job.run_at)),
        cell("Duration", jobDuration(job)),
        cell(
          "Last error",
          job.last_error
            ? el("span", { class: "last-error" }, job.last_error)
            : el("span", { class: "muted" }, "–"),
        ),
        el("td", { class: "actions", "data-label": "Actions" }, ...actions),
      );
    });
    if (rows.length === 0) rows.push(emptyRow(9, "No jobs match these filters."));
    $("jobs-body").replaceChildren(...rows);
    if (focusKey) {
      // The same control if it is still there (a poll redrew the row), else another control
      // of that job's row (Retry turned into Cancel), so keyboard focus never drops to <body>.
      const jobId = focusKey.slice(focusKey.indexOf(":") + 1);
      const again =
        document.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`) ||
        document.querySelector(`#jobs-body tr[data-job-id="${CSS.escape(jobId)}"] button`);
      if (again) again.focus();
    }
  }

  function actionButton(job, action, label) {
    return el(
      "button",
      {
        type: "button",
        class: action === "cancel" ? "secondary small" : "small",
        "aria-label": `${label} job ${job.id}`,
        disabled: state.busyJobs.has(job.id),
        dataset: { focusKey: `${action}:${job.id}`, action },
        onclick: () => changeJob(job.id, action),
      },
      label,
    );
  }

  async function changeJob(jobId, action) {
    if (state.busyJobs.has(jobId)) return;
    state.busyJobs.add(jobId);
    for (const b of document.querySelectorAll(`[data-focus-key="${action}:${CSS.escape(jobId)}"]`)) {
      b.disabled = true;
    }
    const message = $("jobs-message");
    try {
      const job = await api("POST", `/api/jobs/${encodeURIComponent(jobId)}/${action}`);
      const done = action === "retry" ? "is pending again" : "is cancelled";
      setMessage(message, `Job ${jobId} ${done} (status: ${job.status}).`, "ok");
    } catch (error) {
      const verb = action === "retry" ? "retried" : "cancelled";
      let text = `Job ${jobId} was not ${verb}: ${error.message}`;
      if (error.code === "duplicate_active" && error.body.job_id !== undefined) {
        text += ` The active one is job ${error.body.job_id}.`;
      }
      setMessage(message, text, "error");
    } finally {
      state.busyJobs.delete(jobId);
      refreshNow();
    }
  }

  // ---- the lead view ------------------------------------------------------------------------

  async function openLead(clientId, leadId) {
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

  async function showLead(leadId, { quiet = false } = {}) {
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

  // ---- refreshing ---------------------------------------------------------------------------

  async function poll() {
    clearTimeout(state.pollTimer);
    if (!state.signedIn) return;
    // A hidden tab does not poll; it catches up the moment it is shown again.
    if (!document.hidden) await Promise.all([refreshOverview(), refreshJobs()]);
    // An immediate refresh may have run beside this one: keep a single timer chain.
    clearTimeout(state.pollTimer);
    if (state.signedIn) state.pollTimer = setTimeout(poll, POLL_MS);
  }

  function refreshNow() {
    if (state.signedIn) poll();
  }

  // ---- wiring -------------------------------------------------------------------------------

  function fillFilter(select, values) {
    for (const value of values) select.append(el("option", { value }, value));
  }

  function start() {
    fillFilter($("status-filter"), STATUSES);
    fillFilter($("type-filter"), TYPES);
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const given = $("token-input").value.trim();
      if (!given) {
        setMessage($("signin-error"), "Enter the API token.", "error");
        $("token-input").focus();
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, given);
      signIn();
    });
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    $("sync-form").addEventListener("submit", submitSync);
    $("client-select").addEventListener("change", () => loadLeads(""));
    $("lead-select").addEventListener("change", () => showLead($("lead-select").value));
    $("lead-refresh").addEventListener("click", () => showLead(state.leadId));
    $("jobs-filter").addEventListener("change", refreshJobs);
    $("jobs-filter").addEventListener("submit", (event) => event.preventDefault());
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refreshNow();
    });

    takeTokenFromAddress();
    if (token()) signIn();
    else showSignIn("");
  }

  start();
})();
