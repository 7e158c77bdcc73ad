// The jobs table, its filters, and Retry and Cancel.

import { api, reportError } from "./dashboard-api.js";
import { $, cell, el, emptyRow, setMessage, statusBadge } from "./dashboard-dom.js";
import { jobDuration, shortKey, timeNode } from "./dashboard-format.js";
import { openLead } from "./dashboard-lead.js";
import { refreshNow } from "./dashboard-refresh.js";
import { JOBS_LIMIT, state } from "./dashboard-state.js";

export async function refreshJobs() {
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
      cell(
        "Priority",
        el("span", { title: "Lower runs first within its client's turn" }, String(job.priority)),
      ),
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
  const body = $("jobs-body");
  if (rows.length === 0) rows.push(emptyRow(body, "No jobs match these filters."));
  body.replaceChildren(...rows);
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
