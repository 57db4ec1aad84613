// Progressive enhancement only: every page works without this file.
// - relative times ("3 min ago") next to absolute UTC times
// - click-to-sort tables (th[data-sort] in table.sortable; cells may carry data-value)
// - auto-refresh: pages with <body data-refresh=N> poll /healthz and reload when a new crawl was stored
//   (live.js takes this over where the browser has EventSource, and re-announces swapped parts: monitor:updated)
"use strict";

(function () {
  function ago(seconds) {
    if (seconds < 0) seconds = 0;
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " d ago";
  }

  function updateTimes() {
    var now = Date.now() / 1000;
    document.querySelectorAll("time[data-ago]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("datetime")) / 1000;
      if (isNaN(t)) return;
      var note = el.nextElementSibling;
      if (!note || !note.classList.contains("ago")) {
        note = document.createElement("span");
        note.className = "ago muted";
        el.after(note);
      }
      note.textContent = " (" + ago(now - t) + ")";
    });
  }

  function cellValue(row, index, kind) {
    var cell = row.cells[index];
    if (!cell) return kind === "num" ? -Infinity : "";
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
    if (kind === "num") {
      var n = parseFloat(raw);
      return isNaN(n) ? -Infinity : n;
    }
    return raw.toLowerCase();
  }

  function columnIndex(th) {
    var index = 0;
    for (var el = th.previousElementSibling; el; el = el.previousElementSibling) index += el.colSpan || 1;
    return index;
  }

  function makeSortable(table) {
    table.querySelectorAll("thead th[data-sort]").forEach(function (th) {
      th.tabIndex = 0;
      function sort() {
        var kind = th.getAttribute("data-sort");
        var index = columnIndex(th);
        var descending = th.getAttribute("aria-sort") === "ascending";
        table.querySelectorAll("thead th[aria-sort]").forEach(function (o) { o.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, index, kind), y = cellValue(b, index, kind);
          var c = x < y ? -1 : x > y ? 1 : 0;
          return descending ? -c : c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", function (e) {
        if (!e.target.closest("a")) sort();  // a header link sorts on the server instead
      });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
      });
    });
  }

  function crawlKey(health) {
    var swarms = health && health.swarms ? health.swarms : {};
    return Object.keys(swarms).sort().map(function (s) {
      return s + ":" + swarms[s].last_crawl_id + ":" + swarms[s].last_crawl_status;
    }).join(",");
  }

  function autoRefresh(seconds) {
    var known = null;
    function poll() {
      if (document.visibilityState !== "visible") return;
      fetch("/healthz", { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (health) {
          if (!health) return;
          var key = crawlKey(health);
          if (known === null) known = key;
          else if (key !== known) window.location.reload();
        })
        .catch(function () { /* the next poll will try again */ });
    }
    poll();
    window.setInterval(poll, Math.max(10, seconds) * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    updateTimes();
    window.setInterval(updateTimes, 30000);
    var sortable = new WeakSet();
    function enhanceTables() {
      document.querySelectorAll("table.sortable").forEach(function (t) {
        if (!sortable.has(t)) { sortable.add(t); makeSortable(t); }
      });
    }
    enhanceTables();
    document.addEventListener("monitor:updated", function () { updateTimes(); enhanceTables(); });
    var refresh = parseInt(document.body.getAttribute("data-refresh") || "", 10);
    if (refresh > 0) autoRefresh(refresh);
  });
})();
