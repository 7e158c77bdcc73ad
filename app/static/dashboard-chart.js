// The queue's last hour as a chart drawn in the page's own SVG: per minute, the jobs that
// finished, stacked by outcome (left axis), and a line for the due backlog (right axis).
//
// Built with DOM calls only (createElementNS, setAttribute, textContent): no markup is parsed
// and no inline style is set, which the page's Content-Security-Policy would refuse anyway;
// colours come from dashboard.css, by class. The drawing is as wide as its box, in CSS pixels,
// so its text keeps its size on a phone; it is drawn again when that width changes.

import { $ } from "./dashboard-dom.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const OUTCOMES = ["succeeded", "failed", "cancelled"];
const HEIGHT = 200;
const MARGIN = { top: 24, right: 44, bottom: 26, left: 36 };
const DEFAULT_WIDTH = 640;
// Time labels on the quarter hours; none closer than this to the "now" label at the end.
const LABEL_ROOM = 44;

let lastPoints = null;
let drawnWidth = 0;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// An axis from 0 with at most four steps of 1, 2 or 5 times a power of ten (whole jobs).
export function axis(top) {
  const raw = Math.max(top, 1) / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max(1, [1, 2, 5, 10].map((f) => f * power).find((s) => s >= raw));
  const max = Math.max(step, Math.ceil(top / step) * step);
  const ticks = [];
  for (let value = 0; value <= max; value += step) ticks.push(value);
  return { max, ticks };
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function round(n) {
  return Math.round(n * 10) / 10;
}

// What the chart shows, in words: its accessible description.
function describe(points) {
  const sum = (key) => points.reduce((n, p) => n + p[key], 0);
  const now = points.length ? points[points.length - 1].backlog : 0;
  const peak = Math.max(0, ...points.map((p) => p.backlog));
  return (
    `In the last hour: ${sum("succeeded")} succeeded, ${sum("failed")} failed, ` +
    `${sum("cancelled")} cancelled. Due backlog now ${now}, at most ${peak}.`
  );
}

export function renderChart(points) {
  lastPoints = points;
  const figure = $("queue-chart");
  const width = Math.max(280, Math.round(figure.clientWidth) || DEFAULT_WIDTH);
  drawnWidth = width;
  const chart = $("chart-svg");
  chart.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
  chart.setAttribute("width", String(width));
  chart.setAttribute("height", String(HEIGHT));
  $("chart-desc").textContent = describe(points);

  const left = MARGIN.left;
  const right = width - MARGIN.right;
  const top = MARGIN.top;
  const bottom = HEIGHT - MARGIN.bottom;
  const slot = (right - left) / Math.max(points.length, 1);
  const barWidth = Math.max(1, slot * 0.7);
  const finished = axis(Math.max(0, ...points.map((p) => p.succeeded + p.failed + p.cancelled)));
  const backlog = axis(Math.max(0, ...points.map((p) => p.backlog)));
  const yFinished = (n) => bottom - (n / finished.max) * (bottom - top);
  const yBacklog = (n) => bottom - (n / backlog.max) * (bottom - top);

  const grid = svg("g", { class: "chart-grid" });
  const labels = svg("g", { class: "chart-labels" });
  for (const value of finished.ticks) {
    const y = round(yFinished(value));
    grid.append(svg("line", { x1: left, x2: right, y1: y, y2: y }));
    labels.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, String(value)));
  }
  for (const value of backlog.ticks) {
    const y = round(yBacklog(value));
    labels.append(svg("text", { x: right + 6, y: y + 4, class: "backlog-tick" }, String(value)));
  }
  labels.append(svg("text", { x: right, y: HEIGHT - 6, "text-anchor": "end" }, "now"));
  points.forEach((p, i) => {
    const x = left + i * slot;
    if (new Date(p.minute).getMinutes() % 15 !== 0 || right - x < LABEL_ROOM) return;
    grid.append(svg("line", { x1: round(x), x2: round(x), y1: bottom, y2: bottom + 4 }));
    labels.append(
      svg("text", { x: round(x), y: HEIGHT - 6, "text-anchor": "middle" }, clock(p.minute)),
    );
  });

  const bars = svg("g", { class: "chart-bars" });
  const hits = svg("g", { class: "chart-hits" });
  points.forEach((p, i) => {
    const x = round(left + i * slot + (slot - barWidth) / 2);
    let base = 0;
    for (const outcome of OUTCOMES) {
      const count = p[outcome];
      if (!count) continue;
      const y0 = yFinished(base);
      const y1 = yFinished(base + count);
      bars.append(
        svg("rect", {
          class: `bar bar-${outcome}`,
          x,
          y: round(y1),
          width: round(barWidth),
          height: round(Math.max(y0 - y1, 1)),
          "data-minute": p.minute,
          "data-count": count,
        }),
      );
      base += count;
    }
    const words = OUTCOMES.map((o) => `${p[o]} ${o}`).join(", ");
    const hit = svg("rect", {
      class: "hit",
      x: round(left + i * slot),
      y: top,
      width: round(slot),
      height: bottom - top,
    });
    hit.append(svg("title", {}, `${clock(p.minute)}: ${words}; due backlog ${p.backlog}`));
    hits.append(hit);
  });

  // The backlog is counted at each minute's end (the current minute's: now).
  const line = points.map((p, i) => [round(left + (i + 1) * slot), round(yBacklog(p.backlog))]);
  const backlogLine = svg("polyline", { class: "backlog-line", points: line.join(" ") });

  const axes = svg("g", { class: "chart-axes" });
  axes.append(svg("line", { x1: left, x2: right, y1: bottom, y2: bottom }));
  axes.append(
    svg("text", { x: left - 6, y: top - 12, "text-anchor": "end", class: "axis-title" }, "jobs"),
  );
  axes.append(svg("text", { x: right + 6, y: top - 12, class: "axis-title backlog-tick" }, "due"));

  const parts = [grid, bars, backlogLine, axes, labels, hits];
  const quiet = points.every((p) => !p.backlog && OUTCOMES.every((o) => !p[o]));
  if (quiet) {
    const middle = { x: (left + right) / 2, y: (top + bottom) / 2, "text-anchor": "middle" };
    const note = "No job finished or waited in the last hour.";
    parts.push(svg("text", { ...middle, class: "chart-empty" }, note));
  }
  $("chart-plot").replaceChildren(...parts);
}

// Drawn again at its new width when its box changes size (a turned phone, a resized window).
export function watchChartSize() {
  const figure = $("queue-chart");
  if (typeof ResizeObserver === "undefined") return;
  new ResizeObserver(() => {
    const width = Math.round(figure.clientWidth);
    if (lastPoints && width && Math.max(280, width) !== drawnWidth) renderChart(lastPoints);
  }).observe(figure);
}
