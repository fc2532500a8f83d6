// The live view: polls the JSON feed and prepends new rows. Text only (textContent), never HTML,
// so a planted value cannot become markup. Served from the app itself: the CSP allows only 'self'.
"use strict";
(function () {
  const table = document.getElementById("live");
  if (!table) return;
  const body = table.tBodies[0];
  const status = document.getElementById("live-status");
  const feed = table.dataset.feed;
  const eventBase = table.dataset.eventBase;
  const failedSuffix = table.dataset.failedSuffix;
  const seen = new Set();
  const order = [];
  let newest = null;
  const MAX_ROWS = 500;

  // Bidi overrides, zero-width and terminal control characters shown as \uXXXX (as the server does).
  const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;
  function visible(value) {
    return String(value).replace(CONTROL, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text == null ? "" : visible(text);
    row.appendChild(td);
    return td;
  }

  function addRow(event) {
    if (seen.has(event.id)) return;
    seen.add(event.id);
    order.push(event.id);
    if (order.length > 5000) seen.delete(order.shift());
    const m = event.metadata && typeof event.metadata === "object" ? event.metadata : {};
    const tr = document.createElement("tr");
    if (event.action && event.action.endsWith(failedSuffix)) tr.className = "failed";
    cell(tr, event.created_at.replace("T", " ").replace("Z", "").slice(0, 19), "time");
    cell(tr, event.action, "action");
    cell(tr, event.user_id || m.user_ref || m.identifier || "", "user");
    cell(tr, m.ip, "ip");
    const h = m.http && typeof m.http === "object" ? m.http : m; // the request, nested under "http" since 0.2
    cell(tr, [h.method, h.path || h.route, h.status].filter((v) => v != null).join(" "), "req");
    const more = cell(tr, "", "more");
    const a = document.createElement("a");
    a.href = eventBase + encodeURIComponent(event.id);
    a.textContent = "detail";
    more.appendChild(a);
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  }

  async function poll() {
    let url = feed;
    if (newest) url += (url.includes("?") ? "&" : "?") + "newer_than=" + encodeURIComponent(newest);
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      // the first poll is a page newest first; later ones are oldest first
      const rows = newest ? data.rows : data.rows.slice().reverse();
      for (const event of rows) addRow(event);
      // the server compares cursors (times, then ids); the live feed looks back from the newest one
      if (data.newest) newest = data.newest;
      status.textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    } catch (err) {
      status.textContent = "paused: " + err.message;
    }
    setTimeout(poll, 2000);
  }
  poll();
})();
