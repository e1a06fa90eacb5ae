/* bitnetd dashboard: a small single-page app over the daemon's REST API.
 *
 * Design: two views chosen by the URL hash, "#/" (the job list) and "#/jobs/ID" (one job).
 * The list polls GET /v1/jobs; the job view follows GET /v1/jobs/ID/events as a
 * Server-Sent Events stream and refetches the job, its metrics and artifacts whenever an
 * event arrives (throttled), with a slow poll underneath in case the stream drops.
 * The stream is read with fetch() rather than EventSource so that it can carry the
 * Authorization header. A bearer token is asked for only when the daemon answers 401/403
 * (or on the Token button) and is kept in sessionStorage, so it is gone with the tab.
 * Every value from the server reaches the page through textContent, never innerHTML.
 */
(function () {
  "use strict";

  var METRIC_GROUPS = [
    ["pre-compression", ["compression/original_size_mb", "compression/pre_perplexity",
      "compression/pre_eval_loss"]],
    ["compression", ["compression/compressed_size_mb", "compression/ratio",
      "compression/layers_compressed", "compression/sparsity_ratio", "compression/quantized_params",
      "compression/total_params", "compression/layers_quantized"]],
    ["post-compression", ["compression/post_perplexity", "compression/perplexity_degradation",
      "compression/accuracy_preserved", "compression/dequantization_accuracy",
      "compression/gradient_flow_test_passed"]],
    ["fine-tuning", ["compression/post_finetune_perplexity", "compression/perplexity_recovery",
      "compression/fine_tune_epochs", "compression/fine_tune_time_hours"]]
  ];
  var TOKEN_KEY = "bitnetd.token";
  var LIST_POLL_MS = 1500, JOB_POLL_MS = 3000, REFRESH_MIN_MS = 300;

  var view = document.getElementById("view");
  var conn = document.getElementById("conn");
  var current = null;              /* the active view: {stop: fn} */

  /* ---- small DOM helpers ------------------------------------------------------ */

  function el(tag, attrs, children) {
    var n = document.createElement(tag);
    var k;
    for (k in attrs || {}) {
      if (k === "text") n.textContent = attrs[k];
      else if (k === "class") n.className = attrs[k];
      else if (k.slice(0, 2) === "on") n.addEventListener(k.slice(2), attrs[k]);
      else n.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) {
      if (c !== null && c !== undefined) n.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return n;
  }
  function svg(tag, attrs, text) {
    var n = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (var k in attrs) n.setAttribute(k, attrs[k]);
    if (text !== undefined) n.textContent = text;
    return n;
  }
  function clear(n) { while (n.firstChild) n.removeChild(n.firstChild); }

  function setConn(state, text) {
    conn.className = "conn " + state;
    conn.textContent = text;
  }

  /* ---- formatting --------------------------------------------------------------- */

  function fmtNum(v) {
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v !== "number") return v === null || v === undefined ? "" : String(v);
    if (!isFinite(v)) return String(v);
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e7)) return v.toExponential(3);
    return v.toFixed(a < 10 ? 4 : 2);
  }
  function fmtDur(s) {
    if (typeof s !== "number" || !isFinite(s) || s < 0) return "";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 90) return s.toFixed(1) + " s";
    if (s < 5400) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return (s / 3600).toFixed(1) + " h";
  }
  function toDate(t) {
    if (t === null || t === undefined || t === "") return null;
    if (typeof t === "number") return new Date(t > 1e12 ? t : t * 1000);
    var d = new Date(t);
    return isNaN(d.getTime()) ? null : d;
  }
  function fmtTime(t) {
    var d = toDate(t);
    if (!d) return "";
    var now = new Date();
    return d.toDateString() === now.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  }
  function frac(p) {              /* progress as 0..1 whatever the server's scale */
    if (typeof p !== "number" || !isFinite(p)) return 0;
    if (p > 1.0001) p = p / 100;
    return Math.max(0, Math.min(1, p));
  }

  /* ---- job normalisation: tolerate the few shapes a job can take -------------------- */

  function pick(o, names) {
    for (var i = 0; i < names.length; i++) {
      if (o && o[names[i]] !== undefined && o[names[i]] !== null) return o[names[i]];
    }
    return undefined;
  }
  /* The stages by name, and their order as the API lists them (the API owns the list). */
  function normStages(j) {
    var raw = pick(j, ["stages"]);
    if (raw === undefined && j.progress && typeof j.progress === "object") raw = j.progress.stages;
    var out = {}, order = [];
    if (Array.isArray(raw)) {
      raw.forEach(function (s) {
        var name = s && (s.name || s.stage);
        if (name) { out[name] = s; order.push(name); }
      });
    } else if (raw && typeof raw === "object") {
      Object.keys(raw).forEach(function (k) {
        out[k] = typeof raw[k] === "number" ? { progress: raw[k] } : raw[k];
        order.push(k);
      });
    }
    return { byName: out, order: order };
  }
  function normJob(j) {
    var p = j.progress;
    var overall = typeof p === "number" ? p : p && typeof p === "object" ? pick(p, ["overall", "total", "value"]) : undefined;
    var status = j.status || "queued";
    if (overall === undefined) overall = status === "succeeded" ? 1 : 0;
    var err = j.error;
    if (err && typeof err === "object") err = err.detail || err.message || err.title || JSON.stringify(err);
    var stages = normStages(j);
    return {
      raw: j,
      id: String(j.id),
      status: status,
      stage: pick(j, ["stage", "current_stage"]) || "",
      progress: frac(overall),
      stages: stages.byName,
      stageOrder: stages.order,
      model: pick(j, ["model", "model_path"]) || "",
      output: pick(j, ["output", "output_name"]) || "",
      outputDir: pick(j, ["output_dir", "output_path", "output_folder"]) || "",
      created: pick(j, ["created_at", "submitted_at", "created"]),
      started: pick(j, ["started_at"]),
      finished: pick(j, ["finished_at", "ended_at"]),
      eta: pick(j, ["eta_s", "eta_seconds", "eta"]),
      attempts: pick(j, ["attempts"]),
      error: err || "",
      detail: j.detail || "",
      metrics: j.metrics,
      sources: j.metric_sources && typeof j.metric_sources === "object" ? j.metric_sources : {}
    };
  }
  function isActive(st) { return st === "queued" || st === "running"; }

  /* ---- HTTP: fetch with the session token, ask for one on 401/403 -------------------- */

  function token() { try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; } }
  function headers(extra) {
    var h = extra || {};
    var t = token();
    if (t) h.Authorization = "Bearer " + t;
    return h;
  }
  var asking = null;
  function askToken(why) {
    if (asking) return asking;
    asking = new Promise(function (resolve) {
      var input = el("input", { type: "password", autocomplete: "off", placeholder: "token",
        "aria-label": "bearer token", id: "token-input" });
      input.value = token();
      var box;
      function done(v) {
        document.body.removeChild(box);
        asking = null;
        if (v !== null) { try { sessionStorage.setItem(TOKEN_KEY, v); } catch (e) { /* private mode */ } }
        resolve(v);
      }
      var form = el("form", { onsubmit: function (e) { e.preventDefault(); done(input.value.trim()); } }, [
        el("h2", { text: "Bearer token" }),
        el("p", { text: why || "This daemon requires a token. It is kept in this tab only (sessionStorage)." }),
        input,
        el("div", { class: "row" }, [
          el("button", { class: "btn", type: "submit", text: "Use token" }),
          el("button", { class: "btn ghost", type: "button", text: "Cancel", onclick: function () { done(null); } })
        ])
      ]);
      box = el("div", { class: "dialog", role: "dialog" }, [form]);
      document.body.appendChild(box);
      input.focus();
    });
    return asking;
  }
  function problemText(res, body) {
    if (body && typeof body === "object") return body.detail || body.title || JSON.stringify(body);
    return res.status + " " + res.statusText;
  }
  function api(path, opts) {
    opts = opts || {};
    var tries = opts.tries === undefined ? 2 : opts.tries;
    return fetch(path, { method: opts.method || "GET", headers: headers(opts.headers), body: opts.body })
      .then(function (res) {
        if ((res.status === 401 || res.status === 403) && tries > 0 && !opts.noAsk) {
          return askToken(res.status === 403 ?
            "This action needs a token with a wider scope (submit, or admin). It replaces the current one in this tab." : null)
            .then(function (t) {
              if (t === null) throw new Error("a token is required (HTTP " + res.status + ")");
              opts.tries = tries - 1;
              return api(path, opts);
            });
        }
        var ct = res.headers.get("Content-Type") || "";
        var parse = ct.indexOf("json") >= 0 ? res.json() : res.text();
        return parse.then(function (body) {
          if (!res.ok) {
            var e = new Error(problemText(res, body));
            e.status = res.status;
            throw e;
          }
          return body;
        });
      });
  }

  /* ---- the Server-Sent Events stream, read through fetch ---------------------------- */

  function openEvents(jobId, lastId, onEvent, onState) {
    var ctl = new AbortController();
    var stopped = false, ended = false;
    var retry = null;
    function connect() {
      var h = headers({ Accept: "text/event-stream" });
      if (lastId) h["Last-Event-ID"] = lastId;
      fetch("/v1/jobs/" + encodeURIComponent(jobId) + "/events", { headers: h, signal: ctl.signal })
        .then(function (res) {
          var ct = res.headers.get("Content-Type") || "";
          if (!res.ok || !res.body || ct.indexOf("text/event-stream") < 0) throw new Error("no stream");
          onState(true);
          var reader = res.body.getReader();
          var dec = new TextDecoder();
          var buf = "";
          var ev = { event: "message", data: [], id: null };
          function line(l) {
            if (l === "") {
              if (ev.event === "end") ended = true;
              if (ev.data.length) onEvent(ev.event, ev.data.join("\n"), ev.id);
              ev = { event: "message", data: [], id: null };
              return;
            }
            if (l.charAt(0) === ":") return;             /* comment / keep-alive */
            var i = l.indexOf(":");
            var f = i < 0 ? l : l.slice(0, i);
            var v = i < 0 ? "" : l.slice(i + 1).replace(/^ /, "");
            if (f === "event") ev.event = v;
            else if (f === "data") ev.data.push(v);
            else if (f === "id") { ev.id = v; lastId = v; }
          }
          function pump() {
            return reader.read().then(function (r) {
              if (r.done) throw new Error("stream ended");
              buf += dec.decode(r.value, { stream: true });
              var parts = buf.split(/\r\n|\r|\n/);
              buf = parts.pop();
              parts.forEach(line);
              return pump();
            });
          }
          return pump();
        })
        .catch(function () {
          onState(false, ended);
          if (!stopped && !ended) retry = setTimeout(connect, 2000);
        });
    }
    connect();
    return function stop() { stopped = true; clearTimeout(retry); ctl.abort(); };
  }

  /* ---- progress bar -------------------------------------------------------------- */

  function progressBar(p, status) {
    return el("div", { class: "row", style: "gap:8px;flex-wrap:nowrap" }, [
      el("div", { class: "bar " + (status || ""), role: "progressbar", "aria-valuemin": "0",
        "aria-valuemax": "100", "aria-valuenow": String(Math.round(p * 100)) },
         [el("span", { style: "width:" + (p * 100).toFixed(1) + "%" })]),
      el("span", { class: "pct", text: Math.round(p * 100) + "%" })
    ]);
  }

  /* ---- view: job list ------------------------------------------------------------- */

  function listJobs(body) {
    if (Array.isArray(body)) return body;
    return (body && (body.jobs || body.items || body.data)) || [];
  }

  function showList() {
    var tbody = el("tbody", { id: "jobs-body" });
    var count = el("span", { class: "sub", id: "jobs-count" });
    var notice = el("div");
    view.appendChild(el("section", { class: "panel" }, [
      el("h2", {}, ["Jobs", count]),
      notice,
      el("table", { class: "jobs", id: "jobs" }, [
        el("thead", {}, [el("tr", {}, ["Job", "Model", "Output", "Status", "Stage", "Progress", "Submitted", "ETA"]
          .map(function (t) { return el("th", { text: t }); }))]),
        tbody
      ])
    ]));
    var timer = null, stopped = false;
    function render(jobs) {
      clear(tbody);
      count.textContent = jobs.length + (jobs.length === 1 ? " job" : " jobs");
      if (!jobs.length) {
        tbody.appendChild(el("tr", {}, [el("td", { colspan: "8", class: "empty",
          text: "No jobs yet. Submit one with: bitnetctl submit MODEL_FOLDER" })]));
        return;
      }
      jobs.map(normJob).forEach(function (j) {
        var href = "#/jobs/" + encodeURIComponent(j.id);
        tbody.appendChild(el("tr", { class: "job", "data-id": j.id, "data-status": j.status,
          onclick: function () { location.hash = href; } }, [
          el("td", {}, [el("a", { href: href, class: "mono", text: j.id })]),
          el("td", { class: "trunc mono", title: j.model, text: j.model }),
          el("td", { class: "trunc mono", text: j.output }),
          el("td", {}, [el("span", { class: "badge " + j.status, text: j.status })]),
          el("td", { text: j.status === "running" ? j.stage : "" }),
          el("td", {}, [progressBar(j.progress, j.status)]),
          el("td", { text: fmtTime(j.created) }),
          el("td", { class: "num", text: j.status === "running" ? fmtDur(j.eta) : "" })
        ]));
      });
    }
    function poll() {
      api("/v1/jobs?limit=100").then(function (body) {
        clear(notice);
        setConn("live", "live");
        render(listJobs(body));
      }).catch(function (e) {
        setConn("down", "offline");
        clear(notice);
        notice.appendChild(el("div", { class: "notice", text: "Cannot list jobs: " + e.message }));
      }).then(function () {
        if (!stopped) timer = setTimeout(poll, LIST_POLL_MS);
      });
    }
    poll();
    return { stop: function () { stopped = true; clearTimeout(timer); } };
  }

  /* ---- view: one job ------------------------------------------------------------- */

  function stageState(job, name, idx) {
    var s = job.stages[name] || {};
    var st = s.status || s.state;
    var cur = job.stageOrder.indexOf(job.stage);
    if (!st) {
      if (job.status === "succeeded") st = "done";
      else if (name === job.stage) st = job.status === "running" ? "running" : job.status;
      else if (cur >= 0 && idx < cur) st = "done";
      else st = "pending";
    }
    if (st === "succeeded" || st === "completed" || st === "finished") st = "done";
    var p = s.progress !== undefined ? frac(s.progress) : st === "done" ? 1 : 0;
    var dur = pick(s, ["duration_s", "seconds", "elapsed_s", "duration"]);
    if (dur === undefined) {
      var a = toDate(s.started_at), b = toDate(s.finished_at);
      if (a && b) dur = (b - a) / 1000;
    }
    return { state: st, progress: p, duration: dur, note: s.note || s.reason || s.message || "" };
  }

  function renderTimeline(box, job) {
    clear(box);
    job.stageOrder.forEach(function (name, i) {
      var s = stageState(job, name, i);
      var meta = s.state === "running" ? Math.round(s.progress * 100) + "%" +
                   (job.detail && job.detail !== name ? " \u00b7 " + job.detail : "") :
                 s.state === "done" ? fmtDur(s.duration) || "done" : s.state;
      box.appendChild(el("div", { class: "stage " + s.state, "data-stage": name, title: s.note }, [
        el("div", { class: "name", text: name }),
        el("div", { class: "meta", text: meta }),
        el("div", { class: "bar " + (s.state === "done" ? "succeeded" : "") },
          [el("span", { style: "width:" + (s.progress * 100).toFixed(1) + "%" })])
      ]));
    });
  }

  /* Metric rows from GET /v1/jobs/ID/metrics, which answers
   * {"metrics": {key: value} (the step -1 values), "history": {key: [[step, value], ...]}};
   * a flat [{key, step, value}] list is accepted too. */
  function metricRows(body) {
    var rows = [];
    if (body && !Array.isArray(body) && (body.history || (body.metrics && !Array.isArray(body.metrics)))) {
      var m = body.metrics || {}, h = body.history || {};
      Object.keys(m).forEach(function (k) { rows.push({ key: k, step: -1, value: m[k] }); });
      Object.keys(h).forEach(function (k) {
        (h[k] || []).forEach(function (pt) {
          if (Array.isArray(pt)) rows.push({ key: k, step: Number(pt[0]), value: pt[1] });
          else if (pt) rows.push({ key: k, step: Number(pt.step), value: pt.value });
        });
      });
      return rows;
    }
    var list = Array.isArray(body) ? body : (body && (body.metrics || body.items)) || [];
    return list.map(function (r) {
      return { key: r.key || r.name, step: r.step === undefined || r.step === null ? -1 : Number(r.step),
        value: r.value };
    });
  }
  function latestMetrics(rows, job) {
    var m = {};
    var jm = job.metrics;
    if (jm && typeof jm === "object" && !Array.isArray(jm)) Object.keys(jm).forEach(function (k) { m[k] = jm[k]; });
    else if (Array.isArray(jm)) metricRows(jm).forEach(function (r) { m[r.key] = r.value; });
    rows.forEach(function (r) { if (r.step < 0 || !(r.key in m)) m[r.key] = r.value; });
    return m;
  }

  /* m: key -> value; sources: key -> the text a perplexity/loss was measured on
   * ("file:x.txt (report split)", "synthetic (report split)", ...). Synthetic figures are
   * marked: they say nothing about real text. */
  function renderMetrics(tbody, m, sources) {
    clear(tbody);
    var have = 0;
    sources = sources || {};
    METRIC_GROUPS.forEach(function (g) {
      tbody.appendChild(el("tr", { class: "group" }, [el("td", { colspan: "3", text: g[0] })]));
      g[1].forEach(function (k) {
        var ok = m[k] !== undefined && m[k] !== null;
        if (ok) have++;
        var src = typeof sources[k] === "string" ? sources[k] : "";
        var syn = src.indexOf("synthetic") === 0;
        tbody.appendChild(el("tr", { "data-key": k, class: syn ? "synthetic" : "" }, [
          el("td", { text: k }),
          el("td", { class: "num" + (ok ? "" : " missing"), text: ok ? fmtNum(m[k]) : "\u2014" }),
          el("td", { class: "source" + (syn ? " synthetic" : ""), title: src,
            text: src ? (syn ? "SYNTHETIC text" : src) : "" })
        ]));
      });
    });
    return have;
  }

  /* The fine-tuning loss curve: fine_tune/loss rows with step >= 0, as an SVG polyline. */
  function renderLoss(box, rows) {
    clear(box);
    var pts = rows.filter(function (r) { return r.key === "fine_tune/loss" && r.step >= 0 && isFinite(Number(r.value)); })
      .map(function (r) { return [r.step, Number(r.value)]; })
      .sort(function (a, b) { return a[0] - b[0]; });
    if (!pts.length) {
      box.appendChild(el("div", { class: "empty", id: "loss-empty",
        text: "No fine-tuning steps (yet). Fine-tuning runs only when the perplexity degradation is above its threshold." }));
      return 0;
    }
    var W = 560, H = 240, L = 52, R = 14, T = 12, B = 30;
    var x0 = pts[0][0], x1 = pts[pts.length - 1][0];
    var y0 = Infinity, y1 = -Infinity;
    pts.forEach(function (p) { y0 = Math.min(y0, p[1]); y1 = Math.max(y1, p[1]); });
    if (x1 === x0) x1 = x0 + 1;
    var pad = (y1 - y0) * 0.08 || Math.abs(y1) * 0.05 || 1;
    y0 -= pad; y1 += pad;
    function sx(x) { return L + (x - x0) / (x1 - x0) * (W - L - R); }
    function sy(y) { return T + (1 - (y - y0) / (y1 - y0)) * (H - T - B); }
    var s = svg("svg", { class: "chart", id: "loss-chart", viewBox: "0 0 " + W + " " + H,
      preserveAspectRatio: "none", role: "img", "aria-label": "fine-tuning loss by step" });
    for (var i = 0; i <= 4; i++) {
      var yv = y0 + (y1 - y0) * i / 4;
      s.appendChild(svg("line", { class: "grid", x1: L, x2: W - R, y1: sy(yv), y2: sy(yv) }));
      s.appendChild(svg("text", { x: L - 6, y: sy(yv) + 4, "text-anchor": "end" }, yv.toFixed(3)));
    }
    s.appendChild(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    s.appendChild(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    [x0, (x0 + x1) / 2, x1].forEach(function (xv, k) {
      s.appendChild(svg("text", { x: sx(xv), y: H - B + 16, "text-anchor": ["start", "middle", "end"][k] },
        String(Math.round(xv))));
    });
    s.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 2, "text-anchor": "middle" }, "step"));
    s.appendChild(svg("polyline", { class: "line", points: pts.map(function (p) {
      return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1);
    }).join(" ") }));
    if (pts.length <= 60) {
      pts.forEach(function (p) { s.appendChild(svg("circle", { class: "dot", cx: sx(p[0]), cy: sy(p[1]), r: 2.5 })); });
    }
    box.appendChild(s);
    var last = pts[pts.length - 1];
    box.appendChild(el("div", { class: "caption",
      text: pts.length + " steps; first loss " + fmtNum(pts[0][1]) + ", last " + fmtNum(last[1]) }));
    return pts.length;
  }

  function artifactList(body) {
    var a = Array.isArray(body) ? body : (body && (body.artifacts || body.files || body.items || body.data)) || [];
    a = a.map(function (x) { return typeof x === "string" ? { path: x } : x; });
    /* top-level files first (the primary FP16 model and the metadata), then subfolders */
    return a.sort(function (x, y) {
      var p = x.path || x.name || "", q = y.path || y.name || "";
      var dx = p.indexOf("/") >= 0, dy = q.indexOf("/") >= 0;
      return dx !== dy ? (dx ? 1 : -1) : p < q ? -1 : p > q ? 1 : 0;
    });
  }

  /* Downloads go through fetch when a token is in use (a plain link cannot send it). */
  function download(url, name) {
    fetch(url, { headers: headers() }).then(function (res) {
      if (!res.ok) throw new Error(res.status + " " + res.statusText);
      return res.blob();
    }).then(function (b) {
      var u = URL.createObjectURL(b);
      var a = el("a", { href: u, download: name });
      document.body.appendChild(a); a.click(); document.body.removeChild(a);
      setTimeout(function () { URL.revokeObjectURL(u); }, 10000);
    }).catch(function (e) { alert("Download failed: " + e.message); });
  }

  function renderArtifacts(tbody, jobId, list) {
    clear(tbody);
    if (!list.length) {
      tbody.appendChild(el("tr", {}, [el("td", { colspan: "2", class: "empty", text: "No artifacts yet." })]));
      return;
    }
    list.forEach(function (a) {
      var path = a.path || a.name;
      var url = a.url || ("/v1/jobs/" + encodeURIComponent(jobId) + "/artifacts/" +
        path.split("/").map(encodeURIComponent).join("/"));
      var link = el("a", { href: url, class: "mono", download: path.split("/").pop(), text: path,
        onclick: function (e) { if (token()) { e.preventDefault(); download(url, path.split("/").pop()); } } });
      var size = pick(a, ["size", "bytes", "size_bytes"]);
      tbody.appendChild(el("tr", {}, [el("td", {}, [link]),
        el("td", { class: "num", text: typeof size === "number" ? fmtBytes(size) : "" })]));
    });
  }
  function fmtBytes(n) {
    var u = ["B", "KiB", "MiB", "GiB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  }

  function showJob(id) {
    var title = el("h1", { class: "mono", text: "Job " + id });
    var badge = el("span", { class: "badge", id: "job-status" });
    var cancelBtn = el("button", { class: "btn danger", type: "button", id: "cancel", text: "Cancel job" });
    var notice = el("div");
    var overall = el("div", { id: "job-progress" });
    var info = el("dl", { class: "kv", id: "job-info" });
    var timeline = el("div", { class: "timeline", id: "timeline" });
    var metricsBody = el("tbody");
    var metricsCount = el("span", { class: "sub" });
    var lossBox = el("div", { id: "loss" });
    var artBody = el("tbody", { id: "artifacts-body" });
    var eventsBox = el("div", { class: "events", id: "events" });
    view.appendChild(el("div", {}, [
      el("p", {}, [el("a", { href: "#/", text: "\u2190 all jobs" })]),
      notice,
      el("section", { class: "panel" }, [
        el("div", { class: "row", style: "margin-bottom:12px" }, [title, badge, el("span", { class: "spacer", style: "flex:1" }), cancelBtn]),
        overall,
        el("div", { style: "height:12px" }),
        info
      ]),
      el("section", { class: "panel" }, [el("h2", { text: "Stages" }), timeline]),
      el("div", { class: "grid2" }, [
        el("section", { class: "panel" }, [el("h2", {}, ["Metrics", metricsCount]),
          el("table", { class: "metrics", id: "metrics" }, [metricsBody])]),
        el("div", {}, [
          el("section", { class: "panel" }, [el("h2", {}, ["Fine-tuning loss",
            el("span", { class: "sub", text: "fine_tune/loss per step" })]), lossBox]),
          el("section", { class: "panel" }, [el("h2", { text: "Artifacts" }),
            el("table", { id: "artifacts" }, [artBody])]),
          el("section", { class: "panel" }, [el("h2", { text: "Events" }), eventsBox])
        ])
      ])
    ]));

    var job = null, stopped = false, timer = null, lastRefresh = 0, pending = null, seenEvents = 0;
    var path = "/v1/jobs/" + encodeURIComponent(id);

    cancelBtn.addEventListener("click", function () {
      if (!confirm("Cancel job " + id + "?")) return;
      cancelBtn.disabled = true;
      api(path + "/cancel", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" })
        .then(refresh)
        .catch(function (e) { showNotice("Cancel failed: " + e.message); cancelBtn.disabled = false; });
    });

    function showNotice(text) {
      clear(notice);
      if (text) notice.appendChild(el("div", { class: "notice", text: text }));
    }
    function renderInfo(j) {
      clear(info);
      var started = toDate(j.started), finished = toDate(j.finished);
      var rows = [["model", j.model], ["output", j.output], ["output folder", j.outputDir],
        ["stage", j.status === "running" ? j.stage + (j.detail && j.detail !== j.stage ? " \u2014 " + j.detail : "") : ""], ["submitted", fmtTime(j.created)],
        ["started", fmtTime(j.started)], ["finished", fmtTime(j.finished)],
        ["elapsed", started ? fmtDur(((finished || new Date()) - started) / 1000) : ""],
        ["ETA", j.status === "running" ? fmtDur(j.eta) : ""], ["attempts", j.attempts === undefined ? "" : String(j.attempts)]];
      rows.forEach(function (r) {
        if (!r[1]) return;
        info.appendChild(el("dt", { text: r[0] }));
        info.appendChild(el("dd", { class: "mono", text: r[1] }));
      });
      if (j.error) {
        info.appendChild(el("dt", { text: "error" }));
        info.appendChild(el("dd", { class: "error", id: "job-error", text: j.error }));
      }
    }
    function addEvent(name, data) {
      var text = data, t = "";
      try {
        var o = JSON.parse(data);
        t = fmtTime(o.time || o.ts || o.created_at || o.at);
        var kind = name === "end" ? "end" : o.level || o.type || o.kind || name;
        var msg = o.message || o.msg || o.text;
        text = kind + (o.stage ? " [" + o.stage + "]" : "") + (o.host ? " @" + o.host : "") +
          (msg ? ": " + msg : "");
        if (name === "end") text = "stream ended: job " + (o.status || "finished");
        if (!msg && o.progress !== undefined) text += " " + Math.round(frac(o.progress) * 100) + "%";
      } catch (e) { /* plain text event */ }
      seenEvents++;
      eventsBox.appendChild(el("div", {}, [el("span", { class: "t", text: t }), text]));
      while (eventsBox.childNodes.length > 300) eventsBox.removeChild(eventsBox.firstChild);
      eventsBox.scrollTop = eventsBox.scrollHeight;
    }

    function refresh() {
      lastRefresh = Date.now();
      return Promise.all([
        api(path),
        api(path + "/metrics").catch(function () { return []; }),
        api(path + "/artifacts").catch(function () { return []; })
      ]).then(function (r) {
        if (stopped) return;
        showNotice("");
        job = normJob(r[0]);
        badge.className = "badge " + job.status;
        badge.textContent = job.status;
        cancelBtn.style.display = isActive(job.status) ? "" : "none";
        clear(overall);
        overall.appendChild(progressBar(job.progress, job.status));
        renderInfo(job);
        renderTimeline(timeline, job);
        var rows = metricRows(r[1]);
        var srcs = job.sources;
        if (r[1] && r[1].metric_sources && typeof r[1].metric_sources === "object") srcs = r[1].metric_sources;
        var have = renderMetrics(metricsBody, latestMetrics(rows, job), srcs);
        metricsCount.textContent = have + " of 19 reported";
        renderLoss(lossBox, rows);
        renderArtifacts(artBody, id, artifactList(r[2]));
        document.title = "bitnetd \u00b7 " + id + " \u00b7 " + job.status;
      }).catch(function (e) {
        showNotice(e.status === 404 ? "No such job: " + id : "Cannot load the job: " + e.message);
      });
    }
    /* Events arrive in bursts while a stage runs; refetch at most every REFRESH_MIN_MS. */
    function soon() {
      if (pending) return;
      var wait = Math.max(0, REFRESH_MIN_MS - (Date.now() - lastRefresh));
      pending = setTimeout(function () { pending = null; refresh(); }, wait);
    }
    function poll() {
      if (stopped) return;
      (Date.now() - lastRefresh > JOB_POLL_MS / 2 ? refresh() : Promise.resolve()).then(function () {
        if (!stopped) timer = setTimeout(poll, JOB_POLL_MS);
      });
    }
    var stopEvents = openEvents(id, null, function (name, data) {
      addEvent(name, data);
      soon();
    }, function (up, ended) {
      if (ended) setConn("live", "job finished");
      else setConn(up ? "live" : "down", up ? "live (events stream)" : "reconnecting\u2026");
    });
    poll();
    return { stop: function () { stopped = true; clearTimeout(timer); clearTimeout(pending); stopEvents(); } };
  }

  /* ---- routing ---------------------------------------------------------------------- */

  function route() {
    if (current) current.stop();
    clear(view);
    window.scrollTo(0, 0);
    var m = /^#\/jobs\/([^/?]+)/.exec(location.hash);
    document.title = "bitnetd";
    current = m ? showJob(decodeURIComponent(m[1])) : showList();
  }

  document.getElementById("token-btn").addEventListener("click", function () {
    askToken("Paste a bearer token (scope read to watch, submit/admin to cancel). Leave empty to clear.")
      .then(function (t) { if (t !== null) route(); });
  });
  fetch("/healthz").then(function (r) { return r.ok ? r.text() : ""; }).then(function (t) {
    var v = "";
    try { var o = JSON.parse(t); v = o.version ? "bitnetd " + o.version : ""; } catch (e) { /* text */ }
    document.getElementById("foot-info").textContent = v;
  }).catch(function () { /* shown by the views */ });
  window.addEventListener("hashchange", route);
  route();
})();
