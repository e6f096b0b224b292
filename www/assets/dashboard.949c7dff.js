/* Trellis dashboard: polls the status plugin's JSON once a second while the tab is visible (not at
   all while it is hidden), keeps five minutes of history in this tab and draws it with SVG.
   Plain JavaScript, no library, nothing protocol-specific (HTTP/1.1 and HTTP/2 alike).
   The page's elements are a contract with the browser test: [data-metric] elements hold the
   current numbers, body.dataset.polls counts successful polls, body.dataset.error says why the
   last poll failed (absent while polls succeed). */
(function () {
  "use strict";

  var INTERVAL = 1000;          // ms between polls
  var SPAN = 300000;            // ms of history drawn: the last 5 minutes
  var HISTORY = 300;            // samples kept: one per poll
  var TIMEOUT = 5000;           // a poll that takes longer is abandoned (and retried)
  var GAP = 2500;               // samples further apart than this are not joined by a line
  var SVGNS = "http://www.w3.org/2000/svg";
  var CLASSES = ["2xx", "3xx", "4xx", "5xx", "1xx"];   // bottom to top in the stacked chart

  var body = document.body;
  var url = body.getAttribute("data-status-url") || "../status";
  var where = url;              // the URL as messages show it: "/status"
  try { where = new URL(url, location.href).pathname; } catch (e) { /* keep it as written */ }
  var samples = [];             // {t: client ms, s: the status JSON, d: rates or null, epoch}
  var epoch = 0;                // bumped when the counters restart (a new process)
  var polls = 0, timer = 0, busy = false;

  // ---------------------------------------------------------------------------------------------
  // formatting

  function $(id) { return document.getElementById(id); }
  function metric(name) { return document.querySelector('[data-metric="' + name + '"]'); }
  function put(node, text) { if (node && node.textContent !== text) node.textContent = text; }
  function num(x) { return typeof x === "number" && isFinite(x) ? x : 0; }
  function fmtInt(n) { return Math.round(num(n)).toLocaleString("en-US"); }
  function fmtRate(x) {
    if (x == null || !isFinite(x)) return "–";
    if (x < 10) return (Math.round(x * 10) / 10).toFixed(1);
    return fmtInt(x);
  }
  function fmtBytes(n) {
    n = num(n);
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }
  function fmtSeconds(v) {   // a latency in seconds
    if (v == null || isNaN(v)) return "–";
    if (v < 0.001) return Math.max(1, Math.round(v * 1e6)) + " µs";
    if (v < 1) return (v * 1000).toFixed(v < 0.01 ? 2 : v < 0.1 ? 1 : 0) + " ms";
    return v.toFixed(2) + " s";
  }
  function fmtUptime(s) {
    s = Math.floor(num(s));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return d + " d " + h + " h";
    if (h) return h + " h " + m + " min";
    if (m) return m + " min " + (s % 60) + " s";
    return s + " s";
  }
  function short(v) {        // axis labels
    if (v >= 1e6) return +(v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return +(v / 1e3).toFixed(1) + "k";
    return String(+v.toFixed(v < 10 ? 1 : 0));
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v))), f = v / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }

  // ---------------------------------------------------------------------------------------------
  // the numbers

  function routeKey(r) { return (r.host || "*") + " " + r.prefix + " " + r.plugin; }

  // Rates between the previous sample and this one, or null when there is no previous one from
  // the same process. The server's uptime is the clock: it does not drift with the tab's timers.
  function derive(prev, s, now) {
    if (!prev) return null;
    var p = prev.s;
    if (num(s.uptime_seconds) < num(p.uptime_seconds) || num(s.requests.total) < num(p.requests.total))
      return null;
    var dt = num(s.uptime_seconds) - num(p.uptime_seconds);
    if (!(dt > 0.05)) dt = (now - prev.t) / 1000;
    if (!(dt > 0)) return null;
    var rate = function (a, b) { return Math.max(0, num(a) - num(b)) / dt; };
    var d = { dt: dt, rps: rate(s.requests.total, p.requests.total), cls: {}, workers: {}, routes: {},
              bin: rate(s.bytes && s.bytes.in, p.bytes && p.bytes.in),
              bout: rate(s.bytes && s.bytes.out, p.bytes && p.bytes.out) };
    CLASSES.forEach(function (c) { d.cls[c] = rate(s.requests[c], p.requests[c]); });
    var pw = {};
    (p.workers || []).forEach(function (w) { pw[w.index] = w; });
    (s.workers || []).forEach(function (w) {
      if (pw[w.index]) d.workers[w.index] = rate(w.requests, pw[w.index].requests);
    });
    var pr = {};
    (p.routes || []).forEach(function (r) { pr[routeKey(r)] = r; });
    (s.routes || []).forEach(function (r) {
      var k = routeKey(r);
      if (pr[k]) d.routes[k] = rate(r.requests, pr[k].requests);
    });
    return d;
  }

  // The p-quantile of a cumulative histogram (Prometheus style: counts[i] requests took at most
  // buckets[i] seconds): the first bucket whose count reaches p * total, interpolated linearly
  // inside it. Infinity: above the last bucket. null: no requests.
  function quantile(buckets, counts, total, p) {
    if (!(total > 0)) return null;
    var rank = p * total;
    for (var i = 0; i < buckets.length; i++) {
      if (counts[i] >= rank) {
        var lo = i ? buckets[i - 1] : 0, below = i ? counts[i - 1] : 0, inside = counts[i] - below;
        return lo + (buckets[i] - lo) * (inside > 0 ? (rank - below) / inside : 1);
      }
    }
    return Infinity;
  }

  // A route's histogram over the chosen window: since start, or since a sample `seconds` ago.
  function histogram(r, seconds) {
    var h = r.latency || {}, buckets = h.buckets || [], counts = h.counts || [], count = num(h.count);
    if (!seconds || !samples.length) return { buckets: buckets, counts: counts, count: count };
    var last = samples[samples.length - 1], base = null;
    for (var i = 0; i < samples.length; i++) {
      var c = samples[i];
      if (c.epoch === last.epoch && c.t >= last.t - seconds * 1000 - 500) { base = c; break; }
    }
    var old = null;
    if (base && base !== last)
      (base.s.routes || []).forEach(function (o) { if (routeKey(o) === routeKey(r)) old = o.latency; });
    if (!old || !old.counts || old.counts.length !== counts.length)
      return { buckets: buckets, counts: counts, count: count, partial: true };
    return { buckets: buckets, count: count - num(old.count),
             counts: counts.map(function (n, j) { return n - num(old.counts[j]); }) };
  }

  // ---------------------------------------------------------------------------------------------
  // SVG

  function el(name, attrs, parent) {
    var n = document.createElementNS(SVGNS, name);
    for (var k in attrs) n.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(n);
    return n;
  }
  function text(parent, x, y, cls, content, anchor) {
    var t = el("text", { x: x, y: y, "class": cls, "text-anchor": anchor || "start" }, parent);
    t.textContent = content;
    return t;
  }
  // Sizes the drawing to the element's width in CSS pixels, so text is never stretched.
  function frame(svg, height) {
    var w = Math.round(svg.getBoundingClientRect().width || (svg.parentNode && svg.parentNode.clientWidth) || 600);
    w = Math.max(220, w);
    svg.setAttribute("viewBox", "0 0 " + w + " " + height);
    svg.setAttribute("width", w);
    svg.setAttribute("height", height);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    return w;
  }

  // Runs of consecutive samples inside the window that have a value and no gap between them.
  function runs(values, t0) {
    var out = [], start = -1;
    for (var i = 0; i < samples.length; i++) {
      var ok = values[i] != null && isFinite(values[i]) && samples[i].t >= t0;
      var joined = ok && start >= 0 && samples[i].t - samples[i - 1].t <= GAP;
      if (ok && !joined) { if (start >= 0) out.push([start, i - 1]); start = i; }
      else if (!ok && start >= 0) { out.push([start, i - 1]); start = -1; }
    }
    if (start >= 0) out.push([start, samples.length - 1]);
    return out;
  }

  // A time series over the last five minutes. series: [{cls, values (one per sample), dashed,
  // area}]; o: {height, stacked, min (the smallest top of the scale)}.
  function timeChart(svg, series, o) {
    var H = o.height, W = frame(svg, H);
    var L = 44, R = 8, T = 8, B = 20, pw = W - L - R, ph = H - T - B;
    var now = samples.length ? samples[samples.length - 1].t : Date.now(), t0 = now - SPAN;
    var n = samples.length, top = o.min || 1, base = [], any = false, i;
    for (i = 0; i < n; i++) base.push(0);
    series.forEach(function (s) {
      s.lo = []; s.hi = [];
      for (var j = 0; j < n; j++) {
        var v = s.values[j];
        if (v == null || !isFinite(v) || samples[j].t < t0) { s.lo.push(null); s.hi.push(null); continue; }
        var b = o.stacked ? base[j] : 0;
        s.lo.push(b); s.hi.push(b + v);
        if (o.stacked) base[j] = b + v;
        top = Math.max(top, b + v);
        any = true;
      }
    });
    top = niceMax(top);
    var X = function (t) { return (L + (t - t0) / SPAN * pw).toFixed(1); };
    var Y = function (v) { return (T + ph - v / top * ph).toFixed(1); };
    for (var g = 0; g <= 2; g++) {
      var gy = T + ph - ph * g / 2;
      el("line", { x1: L, x2: W - R, y1: gy, y2: gy, "class": "grid" }, svg);
      text(svg, L - 6, gy + 4, "axis", short(top * g / 2), "end");
    }
    var marks = pw < 360 ? [0, 2.5, 5] : [0, 1, 2, 3, 4, 5];
    marks.forEach(function (m) {
      text(svg, L + pw * m / 5, H - 5, "axis", m === 5 ? "now" : "−" + (5 - m) + " min",
           m === 0 ? "start" : m === 5 ? "end" : "middle");
    });
    if (!any) {
      text(svg, L + pw / 2, T + ph / 2, "empty", n ? "collecting: a rate needs two polls" : "waiting for the first poll", "middle");
      return;
    }
    series.forEach(function (s) {
      runs(s.hi, t0).forEach(function (run) {
        var a = run[0], b = run[1], d = "", k;
        for (k = a; k <= b; k++) d += (k === a ? "M" : "L") + X(samples[k].t) + "," + Y(s.hi[k]);
        if (a === b && !o.stacked) {
          el("circle", { cx: X(samples[a].t), cy: Y(s.hi[a]), r: 2, "class": s.cls }, svg);
          return;
        }
        if (o.stacked || s.area) {
          var back = "";
          for (k = b; k >= a; k--) back += "L" + X(samples[k].t) + "," + Y(s.lo[k]);
          el("path", { d: d + back + "Z", "class": "area " + (o.stacked ? "stack " : "") + s.cls }, svg);
        }
        if (!o.stacked)
          el("path", { d: d, "class": "line " + s.cls + (s.dashed ? " dashed" : "") }, svg);
      });
    });
  }

  // One horizontal bar per worker: requests per second, with its connections.
  function workersChart(svg, s, d) {
    var ws = (s.workers || []).slice().sort(function (a, b) { return a.index - b.index; });
    var row = 24, T = 2, H = Math.max(1, ws.length) * row + T + 2;
    var W = frame(svg, H), L = 36, R = Math.min(150, Math.round(W * 0.42)), bw = W - L - R;
    if (!ws.length) { text(svg, W / 2, 16, "empty", "no workers reported", "middle"); return; }
    var rates = ws.map(function (w) { return d && d.workers[w.index] != null ? d.workers[w.index] : null; });
    var top = niceMax(Math.max.apply(null, rates.map(num).concat([1])));
    ws.forEach(function (w, i) {
      var y = T + i * row, r = rates[i];
      text(svg, 0, y + 16, "label", "w" + w.index);
      el("rect", { x: L, y: y + 5, width: bw, height: 14, rx: 3, "class": "bar-bg" }, svg);
      if (r) el("rect", { x: L, y: y + 5, width: Math.max(2, bw * r / top).toFixed(1), height: 14, rx: 3, "class": "bar" }, svg);
      text(svg, L + bw + 8, y + 16, "value", fmtRate(r) + "/s · " + fmtInt(w.connections) + " conn");
    });
  }

  // ---------------------------------------------------------------------------------------------
  // the page

  function series(f) { return samples.map(function (x) { return f(x); }); }

  function render() {
    if (!samples.length) return;
    var last = samples[samples.length - 1], s = last.s, d = last.d;
    var c = s.connections || {}, q = s.requests || {}, pool = s.thread_pool || {}, b = s.bytes || {};

    // summary
    if (d) {
      put(metric("rps"), fmtRate(d.rps));
      put($("rps-note"), "last " + (d.dt < 1.5 ? "second" : d.dt.toFixed(1) + " s"));
    } else {
      put(metric("rps"), fmtRate(num(q.total) / Math.max(1, num(s.uptime_seconds))));
      put($("rps-note"), "average since start");
    }
    put(metric("requests-total"), fmtInt(q.total));
    put(metric("connections-open"), fmtInt(c.open));
    put(metric("connections-idle"), fmtInt(c.idle));
    put(metric("uptime"), fmtInt(Math.floor(num(s.uptime_seconds))));
    put($("uptime-human"), num(s.uptime_seconds) < 60 ? "just started" : fmtUptime(s.uptime_seconds));
    put(metric("generation"), fmtInt(s.generation));
    put(metric("reloads"), fmtInt(s.reloads));
    put($("reload-failures"), fmtInt(s.reload_failures));
    put($("bytes-rate"), d ? fmtBytes(d.bout) + "/s" : "–");
    put($("bytes-total"), fmtBytes(b.out) + " out, " + fmtBytes(b.in) + " in");

    // requests per second
    var rps = series(function (x) { return x.d ? x.d.rps : null; });
    timeChart($("chart-rps"), [{ cls: "s1", values: rps, area: true }], { height: 200, min: 5 });
    var seen = rps.filter(function (v, i) { return v != null && samples[i].t >= last.t - SPAN; });
    put(document.querySelector("[data-rps-now]"), d ? fmtRate(d.rps) : "–");
    put($("rps-peak"), seen.length ? fmtRate(Math.max.apply(null, seen)) : "–");
    put($("rps-avg"), seen.length ? fmtRate(seen.reduce(function (a, v) { return a + v; }, 0) / seen.length) : "–");

    // connections
    timeChart($("chart-connections"), [
      { cls: "s1", values: series(function (x) { return num(x.s.connections.open); }), area: true },
      { cls: "s2", values: series(function (x) { return num(x.s.connections.idle); }), dashed: true },
      { cls: "s3", values: series(function (x) { return num(x.s.connections.active); }) }
    ], { height: 160, min: 4 });
    put($("conn-open"), fmtInt(c.open));
    put($("conn-idle"), fmtInt(c.idle));
    put($("conn-active"), fmtInt(c.active));
    put(metric("connections-plain"), fmtInt(c.plain));
    put(metric("connections-tls"), fmtInt(c.tls));
    put(metric("connections-h2"), fmtInt(c.h2));
    put($("conn-h1"), fmtInt(Math.max(0, num(c.open) - num(c.h2))));
    put($("conn-accepted"), fmtInt(c.accepted));
    put($("conn-rejected"), fmtInt(c.rejected));
    put($("conn-proxy-refused"), fmtInt(c.proxy_refused));
    put($("requests-split"), "HTTP/1.x " + fmtInt(q.h1) + " · HTTP/2 " + fmtInt(q.h2));

    // responses by class
    timeChart($("chart-status"), CLASSES.map(function (k) {
      return { cls: "k" + k.charAt(0), values: series(function (x) { return x.d ? x.d.cls[k] : null; }) };
    }), { height: 160, stacked: true, min: 5 });
    CLASSES.forEach(function (k) {
      put(metric("responses-" + k), fmtInt(q[k]));
      put($("rate-" + k), d ? fmtRate(d.cls[k]) : "–");
    });

    // workers
    workersChart($("chart-workers"), s, d);
    var wt = $("workers-rows");
    if (wt) {
      var rows = (s.workers || []).slice().sort(function (x, y) { return x.index - y.index; }).map(function (w) {
        return [String(w.index), fmtInt(w.connections), d && d.workers[w.index] != null ? fmtRate(d.workers[w.index]) : "–",
                fmtInt(w.requests), fmtBytes(w.bytes_out)];
      });
      fillRows(wt, rows, 1);
    }

    // thread pool
    timeChart($("chart-pool"), [
      { cls: "s2", values: series(function (x) { return num(x.s.thread_pool && x.s.thread_pool.busy); }) },
      { cls: "s4", values: series(function (x) { return num(x.s.thread_pool && x.s.thread_pool.queued); }) }
    ], { height: 120, min: Math.max(1, num(pool.threads)) });
    put(metric("pool-busy"), fmtInt(pool.busy));
    put(metric("pool-queued"), fmtInt(pool.queued));
    put($("pool-threads"), fmtInt(pool.threads));
    put($("pool-queue"), fmtInt(pool.queue));
    put($("pool-rejected"), fmtInt(pool.rejected));

    renderRoutes();
  }

  // Replaces a tbody's rows when their text changed; the first `heads` cells are row headers.
  function fillRows(tbody, rows, heads, keys) {
    var key = JSON.stringify(rows);
    if (tbody.trellisRows === key) return;
    tbody.trellisRows = key;
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    rows.forEach(function (cells, i) {
      var tr = document.createElement("tr");
      if (keys) tr.setAttribute("data-route", keys[i]);
      cells.forEach(function (v, j) {
        var cell = document.createElement(j < heads ? "th" : "td");
        if (j < heads) cell.setAttribute("scope", "row");
        if (v && typeof v === "object") {
          cell.textContent = v.text;
          if (v.cls) cell.className = v.cls;
          if (v.p) cell.setAttribute("data-percentile", v.p);
        } else {
          cell.textContent = v;
        }
        tr.appendChild(cell);
      });
      tbody.appendChild(tr);
    });
  }

  function renderRoutes() {
    if (!samples.length) return;
    var last = samples[samples.length - 1], d = last.d;
    var seconds = Number(($("window") || {}).value || 0);
    var routes = (last.s.routes || []).slice();
    var keys = routes.map(routeKey);
    var rows = routes.map(function (r, i) {
      var h = histogram(r, seconds);
      var cells = [(r.host && r.host !== "*" ? r.host : "") + r.prefix, r.plugin, fmtInt(r.requests),
                   d && d.routes[keys[i]] != null ? fmtRate(d.routes[keys[i]]) : "–"];
      [0.5, 0.9, 0.99].forEach(function (p) {
        var v = quantile(h.buckets, h.counts, h.count, p);
        var shown = v === null ? "–" : v === Infinity ? "> " + fmtSeconds(h.buckets[h.buckets.length - 1]) : fmtSeconds(v);
        cells.push({ text: shown, cls: v === null ? "none" : "", p: String(Math.round(p * 100)) });
      });
      var errors = 0, codes = r.codes || {};
      for (var code in codes) if (code.charAt(0) === "5") errors += num(codes[code]);
      cells.push(fmtInt(errors), fmtInt(r.loop_stalls));
      return cells;
    });
    var tbody = document.querySelector("#routes tbody");
    if (tbody) fillRows(tbody, rows, 1, keys);
  }

  // ---------------------------------------------------------------------------------------------
  // polling

  function setState(state, message) {
    body.setAttribute("data-state", state);
    put($("live-text"), message);
  }

  function PollError(status, body) {
    this.status = status;
    this.text = String(body || "").trim().slice(0, 200);
    this.message = "HTTP " + status;
  }

  function NetError(cause) {
    this.name = cause && cause.name === "AbortError" ? "AbortError" : "NetError";
    this.message = cause && cause.message ? cause.message : String(cause);
  }

  function succeed(s) {
    if (!s || typeof s !== "object" || !s.requests || !s.connections)
      throw new Error("the answer is not the status plugin's JSON");
    var now = Date.now(), prev = samples.length ? samples[samples.length - 1] : null;
    var d = derive(prev, s, now);
    if (prev && !d && (num(s.uptime_seconds) < num(prev.s.uptime_seconds) || num(s.requests.total) < num(prev.s.requests.total)))
      epoch++;
    samples.push({ t: now, s: s, d: d, epoch: epoch });
    while (samples.length > HISTORY || samples[0].t < now - SPAN - GAP) samples.shift();
    render();
    polls++;
    body.dataset.polls = String(polls);
    if ("error" in body.dataset) delete body.dataset.error;
    var box = $("error");
    if (box) box.hidden = true;
    setState("live", "Live · updated " + new Date(now).toLocaleTimeString());
  }

  function failed(e) {
    var msg;
    if (e instanceof PollError) {
      msg = where + " answered " + e.status + (e.text ? " (" + e.text + ")" : "");
      if (e.status === 403)
        msg += ": the status data is served to loopback clients only, unless the /status route's \"allow\" list in server.json names this client's address.";
      else if (e.status === 404)
        msg += ": no status plugin on this route (see the README's status section).";
    } else if (e && e.name === "AbortError") {
      msg = where + " did not answer within " + TIMEOUT / 1000 + " s.";
    } else if (e instanceof NetError) {
      msg = "Cannot reach the server (" + e.message + ").";
    } else if (e instanceof SyntaxError) {
      msg = where + " did not answer JSON.";
    } else {
      msg = "The dashboard could not use the answer: " + (e && e.message ? e.message : String(e));
    }
    body.dataset.error = msg;
    var box = $("error");
    if (box) {
      while (box.firstChild) box.removeChild(box.firstChild);
      var strong = document.createElement("strong");
      strong.textContent = "The last poll failed. ";
      box.appendChild(strong);
      box.appendChild(document.createTextNode(msg + " Retrying every second."));
      box.hidden = false;
    }
    setState("error", "Poll failed · retrying");
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = 0;
    if (document.visibilityState === "hidden") {
      setState("paused", "Paused while this tab is hidden");
      return;
    }
    timer = setTimeout(poll, delay);
  }

  function poll() {
    timer = 0;
    if (busy) return;
    if (document.visibilityState === "hidden") return schedule(0);
    busy = true;
    var started = Date.now();
    var ctl = typeof AbortController === "function" ? new AbortController() : null;
    var guard = ctl ? setTimeout(function () { ctl.abort(); }, TIMEOUT) : 0;
    fetch(url, { cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" },
                 signal: ctl ? ctl.signal : undefined })
      .then(function (r) {
        if (!r.ok)
          return r.text().then(function (t) { throw new PollError(r.status, t); },
                               function () { throw new PollError(r.status, ""); });
        return r.json();
      }, function (e) { throw new NetError(e); })
      .then(succeed)
      .catch(failed)
      .then(function () {
        clearTimeout(guard);
        busy = false;
        schedule(Math.max(0, INTERVAL - (Date.now() - started)));
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") {
      clearTimeout(timer);
      timer = 0;
      setState("paused", "Paused while this tab is hidden");
    } else if (!busy && !timer) {
      poll();
    }
  });

  var resizing = 0;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(render, 150);
  });
  var select = $("window");
  if (select) select.addEventListener("change", renderRoutes);

  try {
    var nav = performance.getEntriesByType("navigation")[0];
    var proto = nav && nav.nextHopProtocol;
    if (proto) put($("protocol"), "This page came over " + (proto === "h2" ? "HTTP/2" : proto.toUpperCase()) + ".");
  } catch (e) { /* older browsers: say nothing */ }

  body.dataset.polls = "0";
  poll();
})();
