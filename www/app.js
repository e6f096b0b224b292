// Trellis default site: show when the page was served and ask /hello.
(function () {
  "use strict";
  var served = document.getElementById("served");
  var status = document.getElementById("hello-status");
  var out = document.getElementById("hello-out");
  var now = new Date();
  if (served) {
    served.dateTime = now.toISOString();
    served.textContent = now.toLocaleString();
  }
  function show(text, ok) {
    if (out) { out.textContent = text; out.className = ok ? "ok" : "err"; }
    if (status) {
      status.textContent = ok ? "/hello is answering" : "/hello did not answer";
      status.className = ok ? "ok" : "err";
    }
  }
  if (!window.fetch) { show("fetch() not available in this browser", false); return; }
  var timer = null, ctl = window.AbortController ? new AbortController() : null;
  if (ctl) timer = setTimeout(function () { ctl.abort(); }, 5000);
  fetch("/hello", { cache: "no-store", signal: ctl ? ctl.signal : undefined })
    .then(function (r) {
      return r.text().then(function (t) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return t.trim().slice(0, 200);
      });
    })
    .then(function (t) { show(t || "(empty body)", true); })
    .catch(function (e) { show("error: " + (e && e.message ? e.message : e), false); })
    .then(function () { if (timer) clearTimeout(timer); });
})();
