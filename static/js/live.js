// Live updates, progressive enhancement only: every page works, and says the same, without this file.
// On pages that show live data (<body data-refresh>: never a ?at= view) it listens to /api/v1/events and, when
// a crawl was stored or an alert changed, fetches this same URL again (filters and ranges included) and swaps
// in the parts of <main> that changed; controls keep their state, and a form being typed in is left alone until
// it loses focus. It replaces monitor.js's polling. ?live=0 turns it off: the page then never changes by itself.
"use strict";

(function () {
  var body = document.body;
  if (!body || !body.hasAttribute("data-refresh")) return;
  if (new URLSearchParams(window.location.search).get("live") === "0") {
    body.removeAttribute("data-refresh");  // the off switch stops monitor.js's polling too
    return;
  }
  if (!window.EventSource || !window.fetch || !window.DOMParser) return;  // monitor.js polls instead
  body.removeAttribute("data-refresh");  // read by monitor.js at DOMContentLoaded, which comes after us

  var RECONNECT_MS = 60000;  // after the stream was refused (503: too many clients) or the server went away
  var main = document.querySelector("main");
  if (!main) return;
  // the server's HTML of each part, kept before monitor.js decorates the DOM (relative times, sorting)
  var known = Array.prototype.map.call(main.children, function (el) { return el.outerHTML; });
  var timer = null, busy = false, again = false, updates = 0;

  function schedule() {
    if (timer === null) timer = window.setTimeout(function () { timer = null; refresh(); }, 250);
  }

  function typing() {
    var el = document.activeElement;
    return el && main.contains(el) && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName);
  }

  function refresh() {
    if (busy) { again = true; return; }
    if (typing()) {
      document.activeElement.addEventListener("blur", schedule, { once: true });
      return;
    }
    busy = true;
    fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-cache", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) { if (text !== null) swap(text); })
      .catch(function () { /* the next event tries again */ })
      .then(function () {
        busy = false;
        if (again) { again = false; schedule(); }
      });
  }

  function keepState(from, to) {
    ["details", "input", "select"].forEach(function (tag) {
      var a = from.querySelectorAll(tag), b = to.querySelectorAll(tag);
      if (a.length !== b.length) return;
      for (var i = 0; i < a.length; i++) {
        if (tag === "details") b[i].open = a[i].open;
        else if (a[i].type === "checkbox" || a[i].type === "radio") b[i].checked = a[i].checked;
        else if (a[i].name === b[i].name) b[i].value = a[i].value;
      }
    });
  }

  function swap(text) {
    var page = new DOMParser().parseFromString(text, "text/html");
    var next = page.querySelector("main");
    if (!next) return;
    var fresh = Array.prototype.slice.call(next.children);
    var html = fresh.map(function (el) { return el.outerHTML; });
    var current = Array.prototype.slice.call(main.children);
    var changed = 0;
    if (current.length !== fresh.length) {
      fresh.forEach(function (el, i) { if (current[i]) keepState(current[i], el); });
      main.replaceChildren.apply(main, fresh.map(function (el) { return document.adoptNode(el); }));
      changed = fresh.length;
    } else {
      for (var i = 0; i < fresh.length; i++) {
        if (html[i] === known[i]) continue;
        keepState(current[i], fresh[i]);
        main.replaceChild(document.adoptNode(fresh[i]), current[i]);
        changed++;
      }
    }
    known = html;
    var footer = document.querySelector("footer"), nextFooter = page.querySelector("footer");
    if (footer && nextFooter) footer.replaceWith(document.adoptNode(nextFooter));
    if (page.title) document.title = page.title;
    if (!changed) return;
    body.setAttribute("data-live-updates", String(++updates));
    document.dispatchEvent(new CustomEvent("monitor:updated"));  // monitor.js decorates the new parts
  }

  var source = null;

  function connect() {
    source = new EventSource("/api/v1/events");
    source.addEventListener("open", function () { body.setAttribute("data-live", "on"); });
    // hello: a crawl may have been stored between this page's render and now; re-checking costs a 304 at most
    ["hello", "crawl", "alert", "resync"].forEach(function (kind) { source.addEventListener(kind, schedule); });
    var mine = source;
    source.addEventListener("error", function () {
      if (mine !== source || mine.readyState !== EventSource.CLOSED) return;  // the browser reconnects by itself
      body.setAttribute("data-live", "off");
      // refused (503) or the server is gone: look at the page now and then, and try the stream again
      window.setTimeout(function () { schedule(); connect(); }, RECONNECT_MS * (1 + Math.random()));
    });
  }

  // a page left for the back/forward cache must not keep its stream: browsers allow 6 connections per host, and
  // held streams would leave none for the next page
  window.addEventListener("pagehide", function () { if (source) source.close(); });
  window.addEventListener("pageshow", function (e) { if (e.persisted) connect(); });
  connect();
})();
