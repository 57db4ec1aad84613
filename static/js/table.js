// The model page's server table, filtered and sorted in place: progressive enhancement only.
// Without this file the filter is a GET form and the column heads are links (monitor/web/server_table.py), each a
// page load. With it, a filter change or a click on a column head asks the page's JSON twin (same ?q=&state=
// &version=&sort=&order=, pinned with ?at= to the crawl the table shows) which rows to show and in which order,
// and moves the rows the server drew (it draws every row, those filtered out hidden): the filter and sort rules
// stay in Python and the row markup in the template, never a second copy here. The address bar follows:
// pushState for a filter submitted or chosen and a sort, replaceState while typing; Back and Forward restore the
// view. Should the twin name a row the table lacks, or fail, the page is loaded from its (new) address instead.
"use strict";

(function () {
  if (!window.fetch || !window.URLSearchParams || !window.Map || !(window.history && history.pushState)) return;
  var FILTERS = ["q", "state", "version"];
  var TYPING_MS = 300;
  var LINKS = "table.servers[data-json] a.sort-link, form.table-filter a.table-clear";
  var shown = 0;  // requests made: only the answer to the last one is applied
  var typingTimer = null;

  function table() { return document.querySelector("table.servers[data-json]"); }

  function rowKey(row) { return row.peer_id + " " + row.span.start + ":" + row.span.end; }

  // The page's query with this form's filter in it (the column sort and swarm, range, at, live... kept).
  function withFilter(form) {
    var search = new URLSearchParams(window.location.search);
    FILTERS.forEach(function (name) {
      var control = form.elements[name];
      var value = control ? control.value.trim() : "";
      if (value) search.set(name, value); else search.delete(name);
    });
    return search;
  }

  function show(search, how, retried) {
    var t = table();
    if (!t) return;
    var mine = ++shown;
    var url = window.location.pathname + (search.toString() ? "?" + search.toString() : "");
    if (how === "push") history.pushState(null, "", url);
    else if (how === "replace") history.replaceState(null, "", url);
    var api = new URL(t.getAttribute("data-json"), window.location.href);
    FILTERS.concat(["sort", "order"]).forEach(function (name) {
      if (search.get(name)) api.searchParams.set(name, search.get(name)); else api.searchParams.delete(name);
    });
    var crawl = t.getAttribute("data-crawl");
    if (!api.searchParams.get("at")) api.searchParams.set("at", crawl);
    fetch(api.toString(), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) {
        if (mine !== shown) return;
        var now = table();
        if (doc && now && now.getAttribute("data-crawl") !== crawl && !retried) {
          show(search, null, true);  // live.js swapped in a newer crawl meanwhile: ask again for that one
        } else if (!doc || !now || !place(now, doc, search)) {
          window.location.reload();  // the server's own answer for this address (an error page, a newer crawl)
        }
      })
      .catch(function () { if (mine === shown) window.location.reload(); });
  }

  // Shows the twin's rows in its order and hides the others; false when the table lacks one of them.
  function place(t, doc, search) {
    var body = t.tBodies[0];
    var rows = new Map();
    Array.prototype.forEach.call(body.rows, function (tr) {
      if (tr.hasAttribute("data-row")) rows.set(tr.getAttribute("data-row"), tr);
    });
    var wanted = doc.model.server_rows.map(rowKey);
    if (!wanted.every(function (key) { return rows.has(key); })) return false;
    var keep = new Set(wanted);
    var ordered = document.createDocumentFragment();
    wanted.forEach(function (key) { var tr = rows.get(key); tr.hidden = false; ordered.appendChild(tr); });
    rows.forEach(function (tr, key) { if (!keep.has(key)) { tr.hidden = true; ordered.appendChild(tr); } });
    var noMatch = body.querySelector("tr.no-match");
    body.insertBefore(ordered, noMatch);
    if (noMatch) noMatch.hidden = wanted.length > 0;
    heads(t, search);
    filterForm(doc.server_table, search);
    document.dispatchEvent(new CustomEvent("monitor:table"));
    return true;
  }

  // Column heads: which one sorts, and where each link leads now (as server_table.sort_links draws them).
  function heads(t, search) {
    var sort = search.get("sort") || "span", order = search.get("order") || "asc";
    t.querySelectorAll("thead th[data-column]").forEach(function (th) {
      var column = th.getAttribute("data-column");
      if (column === sort) th.setAttribute("aria-sort", order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
      var link = th.querySelector("a.sort-link");
      if (!link) return;
      var next = new URLSearchParams(search.toString());
      var nextOrder = column === sort && order === "asc" ? "desc" : "asc";
      if (column === "span" && nextOrder === "asc") { next.delete("sort"); next.delete("order"); }
      else { next.set("sort", column); next.set("order", nextOrder); }
      link.setAttribute("href", window.location.pathname + (next.toString() ? "?" + next.toString() : ""));
    });
  }

  // The form says what the table shows (after Back/Forward too): its fields, the count and the Clear link.
  function filterForm(summary, search) {
    var form = document.querySelector("form.table-filter");
    if (!form) return;
    FILTERS.forEach(function (name) {
      var control = form.elements[name];
      if (control && control !== document.activeElement) control.value = search.get(name) || "";
    });
    var filtered = FILTERS.some(function (name) { return search.get(name); });
    var count = form.querySelector(".table-count"), clear = form.querySelector("a.table-clear");
    if (count) {
      count.textContent = summary.matched + " of " + summary.total + " servers";
      count.hidden = !filtered;
    }
    if (clear) {
      var cleared = new URLSearchParams(search.toString());
      FILTERS.forEach(function (name) { cleared.delete(name); });
      clear.setAttribute("href", window.location.pathname + (cleared.toString() ? "?" + cleared.toString() : ""));
      clear.hidden = !filtered;
    }
  }

  function plainClick(e) {
    return e.button === 0 && !e.metaKey && !e.ctrlKey && !e.shiftKey && !e.altKey;  // else: a new tab, as usual
  }

  // Delegated from the document: live.js may swap in a new table and form at any time.
  document.addEventListener("submit", function (e) {
    var form = e.target.closest && e.target.closest("form.table-filter");
    if (!form || !table()) return;
    e.preventDefault();
    window.clearTimeout(typingTimer);
    show(withFilter(form), "push");
  });
  document.addEventListener("change", function (e) {
    var form = e.target.closest && e.target.closest("form.table-filter");
    if (!form || !table() || e.target.tagName !== "SELECT") return;
    show(withFilter(form), "push");
  });
  document.addEventListener("input", function (e) {
    var form = e.target.closest && e.target.closest("form.table-filter");
    if (!form || !table() || e.target.name !== "q") return;
    window.clearTimeout(typingTimer);
    typingTimer = window.setTimeout(function () { show(withFilter(form), "replace"); }, TYPING_MS);
  });
  document.addEventListener("click", function (e) {
    var link = e.target.closest && e.target.closest(LINKS);
    if (!link || !plainClick(e)) return;
    e.preventDefault();
    show(new URL(link.href).searchParams, "push");
  });
  window.addEventListener("popstate", function () {
    window.clearTimeout(typingTimer); // a search typed just before Back must not overwrite the entry Back restored
    if (table()) show(new URLSearchParams(window.location.search), null);
  });
})();
