// codex-logs serve: the session page. The transcript, paged and followed live,
// and the timeline. Every value from a record goes in as text (textContent,
// setAttribute), never as markup.
"use strict";

(function () {
  const root = document.getElementById("session");
  if (!root) return;
  const eventsUrl = root.dataset.events;
  const timelineUrl = root.dataset.timeline;
  const pageSize = Number(root.dataset.pageSize) || 200;
  const here = new URLSearchParams(location.search);
  const filters = new URLSearchParams();
  for (const key of ["level", "role", "logger", "where", "q"]) {
    if (here.get(key)) filters.set(key, here.get(key));
  }
  const list = document.getElementById("events");
  const more = document.getElementById("more");
  const moreText = document.getElementById("more-text");
  const live = document.getElementById("live");
  const loggers = document.getElementById("loggers");
  const seenLoggers = new Set();
  const POLL_MS = 1000;

  let cursor = here.get("after") || "";
  const partial = Boolean(here.get("after") || here.get("at")); // not from the first event
  let atEnd = false;
  let loading = false;
  let grew = false;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function pad(n, width) { return String(n).padStart(width, "0"); }

  // Rounded to the millisecond from the time's exact value, as the command
  // line rounds it (Python's round(ts, 3)); ts * 1000 would round twice.
  function at(ts) {
    const n = Number(ts);
    return new Date(Math.round(Number(n.toFixed(3)) * 1000));
  }

  // A time past any date (another tool's 1e300) is shown as its number.
  function clock(ts) {
    if (ts === null || ts === undefined) return "--:--:--";
    const d = at(ts);
    if (isNaN(d.getTime())) return String(ts);
    return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2) +
      "." + pad(d.getMilliseconds(), 3);
  }

  function stamp(ts) {
    if (ts === null || ts === undefined) return "no time";
    const d = at(ts);
    if (isNaN(d.getTime())) return String(ts);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1, 2) + "-" + pad(d.getDate(), 2) + " " + clock(ts);
  }

  function seconds(value) {
    const s = Number(value);
    if (!isFinite(s)) return "";
    if (s < 10) return s.toFixed(2) + " s";
    if (s < 60) return s.toFixed(1) + " s";
    const whole = Math.round(s);
    if (whole < 3600) return Math.floor(whole / 60) + " min " + pad(whole % 60, 2) + " s";
    return Math.floor(whole / 3600) + " h " + pad(Math.floor((whole % 3600) / 60), 2) + " min";
  }

  function link(previous, anchor) {
    const params = new URLSearchParams(filters);
    if (previous) params.set("after", previous);
    const query = params.toString();
    return location.pathname + (query ? "?" + query : "") + "#" + anchor;
  }

  function levelClass(level) {
    const name = String(level || "").toUpperCase();
    if (name === "WARNING" || name === "WARN") return "level-warning";
    if (name === "ERROR" || name === "CRITICAL" || name === "FATAL") return "level-error";
    return "";
  }

  function row(ev, previous) {
    const line = el("div", "ev kind-" + (ev.kind || "message"));
    const lc = levelClass(ev.level);
    if (lc) line.classList.add(lc);
    line.id = ev.anchor;
    const time = el("a", "t", clock(ev.ts));
    time.href = link(previous, ev.anchor);
    time.title = stamp(ev.ts) + " (link to this event)";
    line.append(time);
    const pid = el("span", "pid", ev.pid === null || ev.pid === undefined ? "" : ev.pid);
    if (ev.source) pid.title = "source " + ev.source;
    line.append(pid);
    line.append(el("span", "lvl lvl-" + String(ev.level || "").toUpperCase(), ev.level || ""));
    const logger = el("span", "lg", ev.logger || "");
    logger.title = ev.logger || "";
    line.append(logger);
    if (ev.logger && !seenLoggers.has(ev.logger) && seenLoggers.size < 200) {
      seenLoggers.add(ev.logger);
      const option = document.createElement("option");
      option.value = ev.logger;
      loggers.append(option);
    }
    const body = el("div", "body");
    if (ev.role) body.append(el("span", "role", "[" + ev.role + "]"));
    // No prototype: a field named __proto__ is a field like any other.
    const fields = Object.assign(Object.create(null), ev.fields);
    let text = ev.message === null || ev.message === undefined ? "" : String(ev.message);
    if (ev.kind === "start") {
      text = "\u25B6 " + text;
    } else if (ev.kind === "end") {
      const parts = [];
      if (fields.status) parts.push(fields.status);
      if (fields.error_type) parts.push(fields.error_type + (fields.error ? ": " + fields.error : ""));
      if (fields.duration_s !== undefined) parts.push(seconds(fields.duration_s));
      if (fields.status === "error") line.classList.add("failed");
      for (const key of ["status", "error_type", "error", "duration_s"]) delete fields[key];
      text = "\u25A0 " + text + (parts.length ? " (" + parts.join(", ") + ")" : "");
    }
    body.append(el("span", "msg", text));
    for (const key of Object.keys(fields)) {
      const kv = el("span", "kv");
      kv.append(el("b", null, key), document.createTextNode("=" + fields[key]));
      body.append(kv);
    }
    if (ev.exc) {
      const details = el("details", "tb");
      const lines = ev.exc.trimEnd().split("\n");
      details.append(el("summary", null, lines[lines.length - 1] || "traceback"));
      details.append(el("pre", null, ev.exc));
      body.append(details);
    }
    line.append(body);
    return line;
  }

  async function fetchJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function eventsQuery(extra) {
    const params = new URLSearchParams(filters);
    params.set("limit", String(pageSize));
    for (const key of Object.keys(extra)) if (extra[key]) params.set(key, extra[key]);
    return eventsUrl + "?" + params.toString();
  }

  function append(events) {
    const fragment = document.createDocumentFragment();
    let previous = cursor;
    for (const ev of events) {
      fragment.append(row(ev, previous));
      previous = ev.cursor;
    }
    list.append(fragment);
  }

  async function load(first) {
    if (loading) return;
    loading = true;
    try {
      const extra = { after: cursor };
      if (first && !cursor && here.get("at")) extra.at = here.get("at");
      // The first page came with the page itself (a JSON data block, not code).
      const embedded = first ? document.getElementById("first-page") : null;
      const page = embedded ? JSON.parse(embedded.textContent) : await fetchJson(eventsQuery(extra));
      if (page.after) cursor = page.after;
      append(page.events);
      if (page.cursor) cursor = page.cursor;
      if (page.events.length) grew = true;
      atEnd = !page.more;
      if (first) {
        performance.mark("codex-first-rows"); // read by bench/bench_viewer.py
        if (!page.events.length) {
          list.append(el("div", "sentinel muted", filters.toString() ? "No event matches these filters yet." : "No events yet."));
        }
        reveal();
      }
      showState();
    } catch (error) {
      moreText.textContent = "could not load: " + error.message;
    } finally {
      loading = false;
    }
    if (!atEnd && visible(more)) load(false);
  }

  function reveal() {
    if (!location.hash) return;
    const target = document.getElementById(location.hash.slice(1));
    if (target) {
      target.classList.add("target");
      target.scrollIntoView({ block: "center" });
    }
  }

  function showState() {
    live.hidden = !atEnd;
    moreText.textContent = atEnd ? "following: new events appear here as syncs land" : "loading more…";
    if (partial) {
      const back = document.getElementById("from-start");
      if (!back) {
        const a = el("a", null, "\u2191 from the start");
        a.id = "from-start";
        const params = new URLSearchParams(filters);
        a.href = location.pathname + (params.toString() ? "?" + params : "");
        const bar = el("div", "sentinel");
        bar.append(a);
        list.before(bar);
      }
    }
  }

  function visible(node) {
    const box = node.getBoundingClientRect();
    return box.top < window.innerHeight + 400;
  }

  async function poll() {
    if (atEnd && !loading && !document.hidden) await load(false);
    setTimeout(poll, POLL_MS);
  }

  new IntersectionObserver(function (entries) {
    if (entries.some(function (e) { return e.isIntersecting; }) && !atEnd) load(false);
  }, { rootMargin: "400px" }).observe(more);

  // -- the timeline ---------------------------------------------------------

  const box = document.getElementById("timeline");
  const note = document.getElementById("timeline-note");
  const SVG = "http://www.w3.org/2000/svg";
  let shape = null;

  function svg(tag, attrs, parent) {
    const node = document.createElementNS(SVG, tag);
    for (const key of Object.keys(attrs)) node.setAttribute(key, String(attrs[key]));
    if (parent) parent.append(node);
    return node;
  }

  function tip(node, text) { svg("title", {}, node).textContent = text; }

  function draw() {
    box.textContent = "";
    if (!shape || shape.start === null) {
      box.append(el("span", "muted", "no timed events"));
      return;
    }
    const width = Math.max(box.clientWidth - 32, 320);
    const labelW = 96, right = 8, top = 4;
    const densityH = 34, laneH = 22, axisH = 20;
    const lanes = shape.processes;
    const height = top + densityH + 6 + lanes.length * laneH + axisH;
    const plotW = width - labelW - right;
    const span = Math.max(shape.end - shape.start, 1e-6);
    const x = function (ts) { return labelW + ((ts - shape.start) / span) * plotW; };
    const root = svg("svg", { viewBox: "0 0 " + width + " " + height, height: height, role: "img" });
    const n = shape.bins.length;
    const slot = plotW / n;
    const peak = Math.max.apply(null, shape.bins.concat([1]));
    svg("text", { x: 0, y: top + densityH / 2 + 4, class: "label" }, root).textContent = "events";
    shape.bins.forEach(function (count, i) {
      if (!count) return;
      const h = Math.max(2, (count / peak) * densityH);
      const bar = svg("rect", { x: labelW + i * slot, y: top + densityH - h, width: Math.max(slot - 1, 1), height: h, class: "bar" }, root);
      tip(bar, count.toLocaleString() + " events");
    });
    lanes.forEach(function (lane, index) {
      const y = top + densityH + 6 + index * laneH;
      const label = svg("text", { x: 0, y: y + laneH / 2 + 4, class: "label" }, root);
      label.textContent = lane.pid === null ? "no pid" : "pid " + lane.pid;
      svg("rect", { x: labelW, y: y + 3, width: plotW, height: laneH - 6, rx: 3, class: "track" }, root);
      if (lane.bins) {
        const lanePeak = Math.max.apply(null, lane.bins.concat([1]));
        lane.bins.forEach(function (count, i) {
          if (!count) return;
          const h = Math.max(2, (count / lanePeak) * (laneH - 8));
          svg("rect", { x: labelW + i * slot, y: y + laneH - 4 - h, width: Math.max(slot - 1, 1), height: h, class: "lane-bar" }, root);
        });
      }
      lane.spans.forEach(function (s) {
        const from = s[0] === null ? shape.start : s[0];
        const to = s[1] === null ? shape.end : s[1];
        const status = s[1] === null ? "running" : (s[2] === "error" || s[2] === "terminated" ? s[2] : "ok");
        const rect = svg("rect", { x: x(from), y: y + 3, width: Math.max(x(to) - x(from), 2), height: laneH - 6, rx: 3, class: "span-" + status }, root);
        tip(rect, "pid " + lane.pid + ": " + stamp(from) + (s[1] === null ? ", still running" : " to " + stamp(to) + ", " + status));
      });
      lane.alerts.forEach(function (a) {
        if (a[0] === null) return;
        const bad = levelClass(a[1]) === "level-error";
        const mark = svg("circle", { cx: x(a[0]), cy: y + laneH / 2, r: 4.5, class: "mark " + (bad ? "mark-error" : "mark-warning") }, root);
        tip(mark, a[1] + " at " + stamp(a[0]));
      });
    });
    const axisY = top + densityH + 6 + lanes.length * laneH + 14;
    for (let i = 0; i <= 4; i++) {
      const ts = shape.start + (span * i) / 4;
      const tx = x(ts);
      svg("line", { x1: tx, x2: tx, y1: top, y2: axisY - 12, class: "grid" }, root);
      const t = svg("text", { x: tx, y: axisY, class: "axis", "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, root);
      t.textContent = span < 60 ? clock(ts).slice(0, 11) : clock(ts).slice(0, 8);
    }
    root.addEventListener("click", function (event) {
      const bounds = root.getBoundingClientRect();
      const px = ((event.clientX - bounds.left) / bounds.width) * width;
      if (px < labelW) return;
      const ts = shape.start + ((px - labelW) / plotW) * span;
      const params = new URLSearchParams(filters);
      params.set("at", String(ts));
      location.href = location.pathname + "?" + params.toString();
    });
    tip(root, "click to read from that moment");
    box.append(root);
    const processes = lanes.length + (lanes.length === 1 ? " process" : " processes");
    note.textContent = processes + ", " + stamp(shape.start) + " to " + stamp(shape.end) +
      (shape.exact ? "" : " (per-process counts not drawn: a large session)");
  }

  async function refreshTimeline() {
    try {
      shape = await fetchJson(timelineUrl);
      draw();
      if (!performance.getEntriesByName("codex-timeline").length) performance.mark("codex-timeline");
    } catch (error) {
      box.textContent = "";
      box.append(el("span", "muted", "timeline unavailable: " + error.message));
    }
  }

  async function timelineLoop() {
    if (grew && !document.hidden) {
      grew = false;
      await refreshTimeline();
    }
    setTimeout(timelineLoop, 5000);
  }

  let resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(draw, 150);
  });

  // The transcript's first page first: the timeline, which counts the whole
  // session, is asked for once it is drawn.
  load(true).then(function () {
    grew = false;
    setTimeout(poll, POLL_MS);
    return refreshTimeline();
  }).then(function () { setTimeout(timelineLoop, 5000); });
})();
