// What every part of the dashboard shares: what the server told the page, the settings of
// the page itself, and its one mutable state.

// The job statuses, in the API's order, come from the server as a JSON data block in the
// page (which also renders the filters' options and the counts table's columns from them).
const pageData = JSON.parse(document.getElementById("page-data").textContent);
export const STATUSES = pageData.statuses;
// The statuses a job does not leave by itself (the ones a runner never touches again).
export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

export const TOKEN_KEY = "handoff.apiToken";
// Within the 2-3 s refresh window; jobs started from this page are followed faster.
export const POLL_MS = 2500;
export const FOLLOW_MS = 1000;
export const JOBS_LIMIT = 100;

export const root = document.body.dataset.root || "";

export const state = {
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
  // undefined until the first overview arrives; then the newest runner run and how many
  // jobs in view have finished, so a change of either is noticed.
  lastActivity: undefined,
  leadId: "",
  errors: new Map(),
};
