// Times, durations and counts in words.

import { el } from "./dashboard-dom.js";

export function parseTime(iso) {
  return iso ? new Date(iso) : null;
}

export function timeNode(iso) {
  const at = parseTime(iso);
  if (!at || Number.isNaN(at.getTime())) return el("span", { class: "muted" }, "–");
  const sameDay = at.toDateString() === new Date().toDateString();
  const text = sameDay
    ? at.toLocaleTimeString()
    : at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  return el("time", { datetime: iso, title: at.toISOString() }, text);
}

export function formatDuration(ms) {
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

export function jobDuration(job) {
  const started = parseTime(job.started_at);
  if (!started) return el("span", { class: "muted" }, "–");
  const finished = parseTime(job.finished_at);
  if (finished && finished >= started) return formatDuration(finished - started);
  if (job.status === "running") return `${formatDuration(Date.now() - started)} so far`;
  return el("span", { class: "muted" }, "–");
}

// Dedupe keys start with the job's type, which is shown beside them already.
export function shortKey(job) {
  const key = job.dedupe_key || "";
  return key.startsWith(`${job.type}:`) ? key.slice(job.type.length + 1) : key;
}

export function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}
