/* Trellis dashboard: polls the status plugin's JSON once a second while the tab is visible (not at
   all while it is hidden), keeps five minutes of history in this tab and draws it with SVG.
   Plain JavaScript, no library, nothing protocol-specific (HTTP/1.1 and HTTP/2 alike).
   The page's elements are a contract with the browser test: [data-metric] elements hold the
   current numbers, body.dataset.polls counts successful polls, body.dataset.error says why the
   last poll failed (absent while polls succeed). Drawings the test looks for: svg#chart-rps has
   data-max (the top of its scale) and data-peak (the highest rate drawn), and a g.marker.reload
   per configuration reload seen (g.marker.restart per restart); svg#chart-conn-kinds has one
   path per [data-series] (plain, tls, h1, h2); each #routes row has an svg.lat with data-p50,
   data-p90 and data-p99 (seconds). */
(function () {
  "use strict";

  var INTERVAL = 1000;          // ms between polls
  var SPAN = 300000;            // ms of history drawn: the last 5 minutes
  var HISTORY = 300;            // samples kept: one per poll
  var TIMEOUT = 5000;           // a poll that takes longer is abandoned (and retried)
  var GAP = 3500;               // samples further apart than this are not joined by a line, and
                                // a rate over a longer span is an average, not drawn as a point
  var SKEW = 3;                 // s: the server's uptime may trail the tab's clock by this much
                                // before the samples count as coming from a new process
  var SVGNS = "http://www.w3.org/2000/svg";
  var CLASSES = ["2xx", "3xx", "4xx", "5xx", "1xx"];   // bottom to top in the stacked chart

  var body = document.body;
  var url = body.getAttribute("data-status-url") || "../status";
  var where = url;              // the URL as messages show it: "/status"
  try { where = new URL(url, location.href).pathname; } catch (e) { /* keep it as written */ }
  var samples = [];             // {t: client ms, sent/got: monotonic ms of the request and the
                                // answer, s: the status JSON, d: rates or null, epoch, restart}
  var epoch = 0;                // bumped when the counters restart (a new process)
  var mono = typeof performance === "object" && performance.now ? function () { return performance.now(); }
                                                                 : function () { return Date.now(); };
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
  function fmtSpan(ms) {     // a stretch of time without polls
    var s = Math.round(ms / 1000);
    return s < 90 ? s + " s" : fmtUptime(s);
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

  // Whether s comes from another process than the previous sample: its uptime or its request
  // count went down, or (a restart while the tab was hidden, the new process having had time to
  // pass the old one's numbers) its uptime grew by clearly less than the time that passed here.
  // The server produced each answer between sending the request and getting the answer, so the
  // time between the two answers is within [sent - prev.got, got - prev.sent]; a process that ran
  // throughout advanced its uptime by that much (give or take SKEW). Uptime that grew by more
  // than the tab saw is no restart (a client that was suspended, its monotonic clock stopped).
  function restarted(prev, s, sent, got) {
    if (!prev) return false;
    var p = prev.s, up = num(s.uptime_seconds) - num(p.uptime_seconds);
    if (up < 0 || num(s.requests.total) < num(p.requests.total)) return true;
    return up < (sent - prev.got) / 1000 - SKEW;
  }

  // Rates between the previous sample and this one (from the same process), or null without one.
  // The server's uptime is the clock: it does not drift with the tab's timers. d.long: the two
  // polls were more than GAP apart (the tab was hidden, or polls failed), so the rates are averages
  // over that whole stretch (d.wall ms), not the rate of the last second.
  function derive(prev, s, got) {
    if (!prev) return null;
    var p = prev.s;
    var dt = num(s.uptime_seconds) - num(p.uptime_seconds);
    var wall = got - prev.got;
    if (!(dt > 0.05)) dt = wall / 1000;
    if (!(dt > 0)) return null;
    var rate = function (a, b) { return Math.max(0, num(a) - num(b)) / dt; };
    var d = { dt: dt, wall: wall, long: wall > GAP, rps: rate(s.requests.total, p.requests.total), cls: {}, workers: {}, routes: {},
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

  // A route's histogram over the chosen window: since start (seconds 0), or over the last
  // `seconds`: the difference from the oldest sample of this process inside the window. What it
  // really covers: span (seconds; null: the whole uptime), partial (span is short of the window:
  // this tab has not watched for that long yet), whole (no earlier sample to subtract: the
  // whole uptime, although a window was asked for).
  function histogram(r, seconds) {
    var h = r.latency || {}, buckets = h.buckets || [], counts = h.counts || [], count = num(h.count);
    var all = { buckets: buckets, counts: counts, count: count, span: null };
    if (!seconds || !samples.length) return all;
    var last = samples[samples.length - 1], up = num(last.s.uptime_seconds);
    if (up <= seconds + 0.5) { all.span = up; all.start = true; return all; }   // all of it is recent
    var base = null;
    for (var i = 0; i < samples.length; i++) {
      var c = samples[i];
      if (c.epoch === last.epoch && c.t >= last.t - seconds * 1000 - 500) { base = c; break; }
    }
    var old = null;
    if (base && base !== last)
      (base.s.routes || []).forEach(function (o) { if (routeKey(o) === routeKey(r)) old = o.latency; });
    if (!old || !old.counts || old.counts.length !== counts.length || num(old.count) > count) {
      all.whole = true;
      return all;
    }
    var span = up - num(base.s.uptime_seconds);
    return { buckets: buckets, count: count - num(old.count), span: span, partial: span < seconds - 1.5,
             restart: samples[0].epoch !== base.epoch,   // the older samples are of another process
             counts: counts.map(function (n, j) { return Math.max(0, n - num(old.counts[j])); }) };
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

  // Whether sample i's rates are averages over a long stretch without polls (see derive).
  function longAt(i) { return !!(samples[i].d && samples[i].d.long); }

  // A time series over the last five minutes. series: [{name, cls, values (one per sample),
  // dashed, area, rate, avg}]: a rate series leaves out the samples whose rate is an average over
  // a long stretch without polls (the line breaks there); with avg, that average is drawn as a
  // dotted level across the stretch, labelled. o: {height, stacked, min (the smallest top of the
  // scale), markers: [{t, cls, label, attrs}] (vertical lines)}. The svg gets data-max (the top of
  // the scale) and data-peak (the highest value drawn).
  function timeChart(svg, series, o) {
    if (!svg) return;
    var H = o.height, W = frame(svg, H);
    var L = 44, R = 8, T = 8, B = 20, pw = W - L - R, ph = H - T - B;
    var now = samples.length ? samples[samples.length - 1].t : Date.now(), t0 = now - SPAN;
    var n = samples.length, top = o.min || 1, peak = 0, base = [], any = false, i;
    for (i = 0; i < n; i++) base.push(0);
    series.forEach(function (s) {
      s.lo = []; s.hi = []; s.avgs = [];
      for (var j = 0; j < n; j++) {
        var v = s.values[j];
        if (v == null || !isFinite(v) || samples[j].t < t0) { s.lo.push(null); s.hi.push(null); continue; }
        if (s.rate && longAt(j)) {
          s.lo.push(null); s.hi.push(null);
          if (s.avg) { s.avgs.push(j); top = Math.max(top, v); peak = Math.max(peak, v); any = true; }
          continue;
        }
        var b = o.stacked ? base[j] : 0;
        s.lo.push(b); s.hi.push(b + v);
        if (o.stacked) base[j] = b + v;
        top = Math.max(top, b + v);
        peak = Math.max(peak, b + v);
        any = true;
      }
    });
    top = niceMax(top);
    svg.setAttribute("data-max", String(top));
    svg.setAttribute("data-peak", String(Math.round(peak * 100) / 100));
    var X = function (t) { return (L + (Math.max(t, t0) - t0) / SPAN * pw).toFixed(1); };
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
    (o.markers || []).forEach(function (mk) {
      if (mk.t < t0) return;
      var x = X(mk.t), right = x > L + pw - 90;
      var grp = el("g", { "class": "marker " + mk.cls }, svg);
      for (var k in mk.attrs || {}) grp.setAttribute(k, mk.attrs[k]);
      el("line", { x1: x, x2: x, y1: T, y2: T + ph }, grp);
      text(grp, right ? +x - 4 : +x + 4, T + 10, "mark", mk.label, right ? "end" : "start");
      el("title", {}, grp).textContent = mk.title || mk.label;
    });
    if (!any) {
      text(svg, L + pw / 2, T + ph / 2, "empty", n ? "collecting: a rate needs two polls" : "waiting for the first poll", "middle");
      return;
    }
    series.forEach(function (s) {
      var named = s.name ? { "data-series": s.name } : {};
      var attrs = function (a) { for (var k in named) a[k] = named[k]; return a; };
      runs(s.hi, t0).forEach(function (run) {
        var a = run[0], b = run[1], d = "", k;
        for (k = a; k <= b; k++) d += (k === a ? "M" : "L") + X(samples[k].t) + "," + Y(s.hi[k]);
        if (a === b && !o.stacked) {
          el("circle", attrs({ cx: X(samples[a].t), cy: Y(s.hi[a]), r: 2, "class": s.cls }), svg);
          return;
        }
        if (o.stacked || s.area) {
          var back = "";
          for (k = b; k >= a; k--) back += "L" + X(samples[k].t) + "," + Y(s.lo[k]);
          el("path", attrs({ d: d + back + "Z", "class": "area " + (o.stacked ? "stack " : "") + s.cls }), svg);
        }
        if (!o.stacked)
          el("path", attrs({ d: d, "class": "line " + s.cls + (s.dashed ? " dashed" : "") }), svg);
      });
      // The average over a stretch without polls: a dotted level from the previous poll to this one.
      s.avgs.forEach(function (j) {
        var v = s.values[j], x1 = +X(samples[j].t - samples[j].d.wall), x2 = +X(samples[j].t), y = Y(v);
        var why = "average over " + fmtSpan(samples[j].d.wall) + " without polls: " + fmtRate(v) + "/s";
        var grp = el("g", attrs({ "class": "gap-avg " + s.cls }), svg);
        el("line", { x1: x1.toFixed(1), x2: x2.toFixed(1), y1: y, y2: y }, grp);
        el("circle", { cx: x2.toFixed(1), cy: y, r: 2.5 }, grp);
        if (x2 - x1 > 70) text(grp, (x1 + x2) / 2, +y - 5, "mark", "avg, " + fmtSpan(samples[j].d.wall) + " unpolled", "middle");
        el("title", {}, grp).textContent = why;
      });
    });
  }

  // The latency percentiles of one route as a bar on a log scale shared by the rows (lo..hi
  // seconds): p99 light, p90 medium, p50 dark, each from the left edge; ticks at 1 ms, 10 ms,
  // 100 ms and 1 s. Infinity (above the last bucket) runs to the right edge with an arrow.
  var LAT_W = 132, LAT_H = 16;
  function latencyBar(bar) {
    var svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("class", "lat");
    svg.setAttribute("viewBox", "0 0 " + LAT_W + " " + LAT_H);
    svg.setAttribute("width", LAT_W);
    svg.setAttribute("height", LAT_H);
    svg.setAttribute("role", "img");
    var lo = Math.log(bar.lo), span = Math.log(bar.hi) - lo;
    var x = function (v) {
      if (v === Infinity) return LAT_W;
      return Math.max(1, Math.min(LAT_W, (Math.log(Math.max(v, bar.lo)) - lo) / span * LAT_W));
    };
    el("rect", { x: 0, y: 3, width: LAT_W, height: LAT_H - 6, rx: 2, "class": "bar-bg" }, svg);
    [0.001, 0.01, 0.1, 1].forEach(function (t) {
      if (t > bar.lo && t < bar.hi) el("line", { x1: x(t).toFixed(1), x2: x(t).toFixed(1), y1: 1, y2: LAT_H - 1, "class": "tick" }, svg);
    });
    var said = [];
    ["p99", "p90", "p50"].forEach(function (k) {
      var v = bar[k];
      svg.setAttribute("data-" + k, v == null ? "" : v === Infinity ? "Infinity" : String(v));
      if (v == null) return;
      el("rect", { x: 0, y: 3, width: x(v).toFixed(1), height: LAT_H - 6, rx: 2, "class": "lat " + k }, svg);
      said.unshift(k + " " + (v === Infinity ? "> " + fmtSeconds(bar.hi) : fmtSeconds(v)));
    });
    if (bar.p99 === Infinity) el("path", { d: "M" + (LAT_W - 6) + ",2L" + LAT_W + "," + LAT_H / 2 + "L" + (LAT_W - 6) + "," + (LAT_H - 2) + "Z", "class": "over" }, svg);
    var label = said.length ? said.join(", ") : "no requests in the window";
    svg.setAttribute("aria-label", label + " (log scale, " + fmtSeconds(bar.lo) + " to " + fmtSeconds(bar.hi) + ")");
    el("title", {}, svg).textContent = label;
    return svg;
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

  // What happened between consecutive samples in the last five minutes: reloads (the generation
  // changed; a marker labelled with the new generation), failed reloads and restarts (a new epoch).
  // reloads/failures: how many, from the servers' own counters.
  function events() {
    var out = { markers: [], reloads: 0, failures: 0 };
    if (!samples.length) return out;
    var t0 = samples[samples.length - 1].t - SPAN;
    for (var i = 1; i < samples.length; i++) {
      var a = samples[i - 1], b = samples[i];
      if (b.t < t0) continue;
      if (b.epoch !== a.epoch) {
        out.markers.push({ t: b.t, cls: "restart", label: "restart",
                           title: "the server restarted (uptime " + fmtUptime(b.s.uptime_seconds) + ")" });
        continue;
      }
      var ok = Math.max(0, num(b.s.reloads) - num(a.s.reloads));
      var bad = Math.max(0, num(b.s.reload_failures) - num(a.s.reload_failures));
      if (b.s.generation !== a.s.generation || ok) {
        out.reloads += Math.max(1, ok);
        out.markers.push({ t: b.t, cls: "reload", label: "reload · gen " + fmtInt(b.s.generation),
                           attrs: { "data-generation": String(b.s.generation) },
                           title: "configuration reloaded: generation " + fmtInt(a.s.generation) + " → " + fmtInt(b.s.generation) });
      }
      if (bad) {
        out.failures += bad;
        out.markers.push({ t: b.t, cls: "reload failed", label: "reload failed",
                           title: "a reload failed; generation " + fmtInt(b.s.generation) + " kept" });
      }
    }
    return out;
  }

  function render() {
    if (!samples.length) return;
    var last = samples[samples.length - 1], s = last.s, d = last.d;
    var c = s.connections || {}, q = s.requests || {}, pool = s.thread_pool || {}, b = s.bytes || {};

    // summary
    if (d) {
      put(metric("rps"), fmtRate(d.rps));
      put($("rps-note"), d.long ? "average over " + fmtSpan(d.wall) + " without polls"
                                : "last " + (d.dt < 1.5 ? "second" : d.dt.toFixed(1) + " s"));
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
    put($("bytes-rate"), d ? fmtBytes(d.bout) + "/s" + (d.long ? " avg" : "") : "–");
    put($("bytes-total"), fmtBytes(b.out) + " out, " + fmtBytes(b.in) + " in");

    // requests per second, with a marker where the configuration was reloaded (the generation
    // changed), a reload failed, or the server restarted
    var rps = series(function (x) { return x.d ? x.d.rps : null; });
    var ev = events();
    timeChart($("chart-rps"), [{ name: "rps", cls: "s1", values: rps, area: true, rate: true, avg: true }],
              { height: 200, min: 5, markers: ev.markers });
    put($("rps-reloads"), fmtInt(ev.reloads));
    put($("rps-reloads-note"), ev.failures ? "(" + fmtInt(ev.failures) + " failed)" : "");
    var seen = rps.filter(function (v, i) { return v != null && !longAt(i) && samples[i].t >= last.t - SPAN; });
    put(document.querySelector("[data-rps-now]"), d ? fmtRate(d.rps) + (d.long ? " (avg)" : "") : "–");
    put($("rps-peak"), seen.length ? fmtRate(Math.max.apply(null, seen)) : "–");
    put($("rps-avg"), seen.length ? fmtRate(seen.reduce(function (a, v) { return a + v; }, 0) / seen.length) : "–");

    // connections
    timeChart($("chart-connections"), [
      { name: "open", cls: "s1", values: series(function (x) { return num(x.s.connections.open); }), area: true },
      { name: "idle", cls: "s2", values: series(function (x) { return num(x.s.connections.idle); }), dashed: true },
      { name: "active", cls: "s3", values: series(function (x) { return num(x.s.connections.active); }) }
    ], { height: 160, min: 4 });
    // the same connections by transport (plain TCP, TLS) and by protocol (HTTP/1.x, HTTP/2)
    timeChart($("chart-conn-kinds"), [
      { name: "tls", cls: "s1", values: series(function (x) { return num(x.s.connections.tls); }) },
      { name: "plain", cls: "s4", values: series(function (x) { return num(x.s.connections.plain); }) },
      { name: "h1", cls: "s2", dashed: true,
        values: series(function (x) { return Math.max(0, num(x.s.connections.open) - num(x.s.connections.h2)); }) },
      { name: "h2", cls: "s3", dashed: true, values: series(function (x) { return num(x.s.connections.h2); }) }
    ], { height: 120, min: 4 });
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
      return { name: k, cls: "k" + k.charAt(0), rate: true, values: series(function (x) { return x.d ? x.d.cls[k] : null; }) };
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
      { name: "busy", cls: "s2", values: series(function (x) { return num(x.s.thread_pool && x.s.thread_pool.busy); }) },
      { name: "queued", cls: "s4", values: series(function (x) { return num(x.s.thread_pool && x.s.thread_pool.queued); }) }
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
          if (v.bar) cell.appendChild(latencyBar(v.bar));
          else cell.textContent = v.text;
          if (v.cls) cell.className = v.cls;
          if (v.col) cell.setAttribute("data-col", v.col);
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
    var hists = routes.map(function (r) { return histogram(r, seconds); });
    // one log scale for every row's bar: from a fifth of the first bucket to the last bucket
    var lo = Infinity, hi = 0;
    hists.forEach(function (h) {
      if (h.buckets.length) { lo = Math.min(lo, num(h.buckets[0]) / 5); hi = Math.max(hi, num(h.buckets[h.buckets.length - 1])); }
    });
    if (!(lo > 0) || !(hi > lo)) { lo = 0.0001; hi = 5; }
    var rows = routes.map(function (r, i) {
      var h = hists[i], bar = { lo: lo, hi: hi };
      var cells = [(r.host && r.host !== "*" ? r.host : "") + r.prefix, { text: r.plugin, col: "plugin" },
                   { text: fmtInt(r.requests), col: "requests" },
                   { text: d && d.routes[keys[i]] != null ? fmtRate(d.routes[keys[i]]) : "–", col: "rate" }];
      [0.5, 0.9, 0.99].forEach(function (p) {
        var v = quantile(h.buckets, h.counts, h.count, p), k = "p" + Math.round(p * 100);
        var shown = v === null ? "–" : v === Infinity ? "> " + fmtSeconds(h.buckets[h.buckets.length - 1]) : fmtSeconds(v);
        bar[k] = v;
        cells.push({ text: shown, cls: v === null ? "none" : "", col: k, p: String(Math.round(p * 100)) });
      });
      cells.push({ bar: bar, col: "latency", cls: "latcell" });
      var errors = 0, codes = r.codes || {};
      for (var code in codes) if (code.charAt(0) === "5") errors += num(codes[code]);
      cells.push({ text: fmtInt(errors), col: "5xx" }, { text: fmtInt(r.loop_stalls), col: "stalls" });
      return cells;
    });
    var tbody = document.querySelector("#routes tbody");
    if (tbody) fillRows(tbody, rows, 1, keys);
    put($("window-note"), windowNote(seconds, hists));
  }

  // What the percentiles really cover, said plainly: a window is only as long as this tab (and the
  // server) have been watching.
  function windowNote(seconds, hists) {
    if (!seconds) return "Percentiles over the whole uptime.";
    var whole = false, start = false, restart = false, span = null;
    hists.forEach(function (h) {
      if (h.whole) whole = true;
      else if (h.span != null) {
        span = span == null ? h.span : Math.min(span, h.span);
        if (h.start) start = true;
        if (h.restart) restart = true;
      }
    });
    if (whole && span == null)
      return "Percentiles over the whole uptime for now: no earlier sample in this tab to subtract yet.";
    var text;
    if (span == null || span >= seconds - 1.5)
      text = "Percentiles over the last minute";
    else
      text = "Percentiles over the last " + Math.max(1, Math.round(span)) + " s only: " +
             (start ? "the server started then" : restart ? "this tab's first sample since the server restarted"
                                                       : "this tab has not watched for a minute yet");
    return text + (whole ? " (routes without an earlier sample: the whole uptime)." : ".");
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

  function succeed(s, sent) {
    if (!s || typeof s !== "object" || !s.requests || !s.connections)
      throw new Error("the answer is not the status plugin's JSON");
    var now = Date.now(), got = mono(), prev = samples.length ? samples[samples.length - 1] : null;
    var restart = restarted(prev, s, sent, got);
    if (restart) epoch++;
    var d = restart ? null : derive(prev, s, got);
    samples.push({ t: now, sent: sent, got: got, s: s, d: d, epoch: epoch, restart: restart });
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
    var started = Date.now(), sent = mono();
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
      .then(function (s) { succeed(s, sent); })
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
