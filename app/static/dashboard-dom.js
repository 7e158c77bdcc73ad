// Small DOM helpers. Data is only ever written with textContent (see el()), never as markup,
// so a message's text cannot inject HTML into the page.

export const $ = (id) => document.getElementById(id);

// Builds an element; string children become text nodes, so data is never parsed as HTML.
export function el(tag, props = {}, ...children) {
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
export function cell(label, ...children) {
  return el("td", { "data-label": label }, el("div", { class: "value" }, ...children));
}

// How many columns the table of `body` has, counted on its header's last row.
export function columnCount(body) {
  const head = body.closest("table")?.tHead;
  const header = head?.rows[head.rows.length - 1];
  return header ? [...header.cells].reduce((n, c) => n + c.colSpan, 0) : 1;
}

// A row of one cell across every column of the table of `body`, saying why it is empty.
export function emptyRow(body, text) {
  return el("tr", { class: "empty" }, el("td", { colspan: columnCount(body) }, text));
}

export function setMessage(node, text, kind) {
  node.textContent = text || "";
  node.classList.toggle("error", kind === "error");
  node.classList.toggle("ok", kind === "ok");
}

export function statusBadge(status) {
  return el("span", { class: `badge status status-${status}` }, status);
}
