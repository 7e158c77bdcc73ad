// Following the jobs of the last sync.

import { api } from "./dashboard-api.js";
import { $, el, setMessage, statusBadge } from "./dashboard-dom.js";
import { plural, shortKey } from "./dashboard-format.js";
import { showLead } from "./dashboard-lead.js";
import { refreshNow } from "./dashboard-refresh.js";
import { FINISHED, FOLLOW_MS, state } from "./dashboard-state.js";

export function follow(jobs) {
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

export function renderFollowed() {
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
