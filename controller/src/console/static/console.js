// The edgefleet console's only script: times in the viewer's zone, live parts of a page kept
// current by server-sent events (polling while the stream is down), and a confirmation
// before an action that cannot be undone.
(function () {
  "use strict";

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      if (!el.title) el.title = el.textContent;
      el.textContent = when.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
      });
    });
  }

  function confirmations(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.dataset.confirm)) e.preventDefault();
      });
    });
  }

  function swap(el, html) {
    if (el.innerHTML === html) return;
    el.innerHTML = html;
    localTimes(el);
    confirmations(el);
  }

  // One live part: its HTML comes as "update" events; while the stream is down the part is
  // fetched every few seconds, and the stream is tried again.
  function live(el) {
    var part = el.dataset.live;
    var status = el.parentNode.querySelector(".live-status[data-for='" + el.id + "']");
    var poller = null, source = null, gone = false;
    function say(text) { if (status) status.textContent = text; }
    function poll() {
      fetch(part, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) { if (html !== null && html !== undefined) swap(el, html); })
        .catch(function () {});
    }
    function startPolling() {
      if (gone) return;
      // The stream is tried again in 15 s, each time it fails.
      window.setTimeout(connect, 15000);
      if (poller) return;
      say("Live updates: polling every 3 s");
      poller = window.setInterval(poll, 3000);
    }
    function connect() {
      if (gone) return;
      if (!window.EventSource) { startPolling(); return; }
      if (source) source.close();
      source = new EventSource("/events?part=" + encodeURIComponent(part));
      source.addEventListener("update", function (e) {
        if (poller) { window.clearInterval(poller); poller = null; }
        say("Live updates: on");
        swap(el, e.data);
      });
      source.addEventListener("signed-out", function () { window.location.reload(); });
      // What the part shows is no more (a rollout removed): stop asking.
      source.addEventListener("gone", function () {
        source.close();
        source = null;
        if (poller) { window.clearInterval(poller); poller = null; }
        gone = true;
        say("Live updates: stopped (this is no longer there; reload the page)");
      });
      source.onerror = function () {
        source.close();
        source = null;
        startPolling();
      };
    }
    connect();
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    confirmations(document);
    document.querySelectorAll("[data-live]").forEach(live);
  });
})();
