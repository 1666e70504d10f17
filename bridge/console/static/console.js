// bridge console: live values over Server-Sent Events, ages that tick, and actions that call
// the REST API with the session's CSRF token. No inline scripts: the CSP forbids them.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const banner = document.getElementById("live-banner");
  const status = document.getElementById("status");

  function formatAge(s) {
    if (!isFinite(s)) return "–";
    s = Math.max(0, s);
    if (s < 60) return s.toFixed(0) + " s";
    if (s < 3600) return (s / 60).toFixed(0) + " min";
    if (s < 86400) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function formatScore(x) {
    return x === null || x === undefined ? "–" : Number(x).toPrecision(3).replace(/\.?0+$/, "");
  }

  function setQuality(cell, quality) {
    if (!cell) return;
    const span = document.createElement("span");
    span.className = "q q-" + quality;
    span.textContent = quality;
    cell.replaceChildren(span);
  }

  function tickAges() {
    const now = Date.now() / 1000;
    for (const cell of document.querySelectorAll("[data-ts]")) {
      const ts = parseFloat(cell.dataset.ts);
      if (!isFinite(ts)) continue;
      const base = cell.dataset.age === "" ? NaN : parseFloat(cell.dataset.age || "0");
      cell.textContent = formatAge(base + now - ts);
    }
  }

  // As bridge/console/charts.py draws it (sparkline_points), over as many values as the
  // gateway keeps per row (SPARK_POINTS in bridge/console/live.py).
  const SPARK_POINTS = 60;

  function drawSpark(line) {
    const values = line.dataset.values.split(" ").filter((v) => v !== "").map(Number);
    const box = line.ownerSVGElement.viewBox.baseVal;
    const w = box.width, h = box.height, pad = h > 4 ? 1 : 0;
    if (!values.length) { line.setAttribute("points", ""); return; }
    const lo = Math.min(...values), hi = Math.max(...values);
    const dx = values.length > 1 ? w / (values.length - 1) : 0;
    const y = (v) => (hi === lo ? h / 2 : pad + (h - 2 * pad) * (hi - v) / (hi - lo));
    const r1 = (x) => Math.round(x * 10) / 10;
    line.setAttribute("points", values.map((v, i) => r1(i * dx) + "," + r1(y(v))).join(" "));
  }

  function appendSpark(line, score) {
    const values = line.dataset.values.split(" ").filter((v) => v !== "");
    values.push(String(score));
    line.dataset.values = values.slice(-SPARK_POINTS).join(" ");
    drawSpark(line);
  }

  function applyRows(rows) {
    for (const r of rows) {
      for (const el of document.querySelectorAll('[data-key="' + CSS.escape(r.k) + '"]')) {
        const label = el.querySelector('[data-f="label"]');
        if (label && label.textContent !== r.label) {
          label.textContent = r.label;
          label.classList.add("changed");
        }
        const score = el.querySelector('[data-f="score"]');
        if (score) score.textContent = formatScore(r.score);
        setQuality(el.querySelector('[data-f="quality"]'), r.quality);
        const age = el.querySelector('[data-f="age"]');
        // A prediction the page already shows (the stream's first event repeats them) adds
        // nothing to the trend.
        const fresh = !age || Number(age.dataset.ts) !== r.ts;
        if (age) {
          age.dataset.ts = r.ts;
          age.dataset.age = r.age === null ? "" : r.age;
        }
        const line = el.querySelector("polyline.spark-line");
        if (line && fresh && r.score !== null) appendSpark(line, r.score);
      }
    }
    tickAges();
  }

  function applyTags(tags) {
    for (const t of tags) {
      const row = document.querySelector('tr[data-tag="' + CSS.escape(t.k) + '"]');
      if (!row) continue;
      row.querySelector('[data-f="value"]').textContent = t.value === null ? "" : String(t.value);
      setQuality(row.querySelector('[data-f="quality"]'), t.quality);
      const age = row.querySelector('[data-f="age"]');
      if (t.ts !== null) age.dataset.ts = t.ts;
    }
    tickAges();
  }

  function applyOverview(o) {
    for (const [q, n] of Object.entries(o.quality)) {
      const el = document.querySelector('[data-count="quality.' + q + '"]');
      if (el) el.textContent = n;
    }
    for (const [name, state] of Object.entries(o.sources)) {
      const el = document.querySelector('[data-count="sources.' + CSS.escape(name) + '"]');
      if (el) {
        el.textContent = state;
        el.className = "state s-" + state;
      }
    }
  }

  function live(url) {
    const events = new EventSource(url);
    const show = (lost) => { banner.hidden = !lost; };
    events.addEventListener("hello", () => show(false));
    events.addEventListener("rows", (e) => applyRows(JSON.parse(e.data)));
    events.addEventListener("tags", (e) => applyTags(JSON.parse(e.data)));
    events.addEventListener("overview", (e) => applyOverview(JSON.parse(e.data)));
    // EventSource reconnects by itself (retry: 3 s); the banner says so meanwhile. A stream
    // the server closed for good (a 401 after the session ended) is retried by a page reload.
    events.onerror = () => {
      show(true);
      if (events.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 5000);
    };
  }

  function say(text, bad) {
    status.textContent = text;
    status.classList.toggle("bad", !!bad);
  }

  async function send(form, submitter) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.type === "submit") continue;
      body[el.name] = el.dataset.number ? Number(el.value) : el.value;
    }
    if (submitter && submitter.name) body[submitter.name] = submitter.value;
    let answer;
    try {
      answer = await fetch(form.dataset.api, {
        method: form.dataset.method || "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body),
      });
    } catch (err) {
      say("The gateway did not answer: " + err, true);
      return;
    }
    if (answer.ok) {
      say("Done.");
      if (form.dataset.reload) setTimeout(() => location.reload(), 300);
      return;
    }
    let detail = answer.statusText;
    try { detail = (await answer.json()).detail || detail; } catch (_) { /* not JSON */ }
    say("Refused (" + answer.status + "): " + detail, true);
  }

  function confirmStep(form, submitter) {
    // A second, explicit click: the question and two buttons appear under the form.
    let box = form.nextElementSibling;
    if (box && box.classList.contains("confirm")) box.remove();
    box = document.createElement("div");
    box.className = "confirm";
    box.setAttribute("role", "alertdialog");
    box.setAttribute("aria-label", "Confirm");
    const text = document.createElement("p");
    text.textContent = form.dataset.confirm;
    const yes = document.createElement("button");
    yes.type = "button";
    yes.textContent = "Confirm";
    const no = document.createElement("button");
    no.type = "button";
    no.textContent = "Cancel";
    yes.addEventListener("click", () => { box.remove(); send(form, submitter); });
    no.addEventListener("click", () => { box.remove(); submitter && submitter.focus(); });
    box.append(text, yes, no);
    form.after(box);
    yes.focus();
  }

  // The name a person acknowledges with is remembered in this browser (not on the gateway).
  for (const input of document.querySelectorAll("input[data-remember]")) {
    const kept = localStorage.getItem("bridge." + input.dataset.remember);
    if (kept) input.value = kept;
    input.addEventListener("change", () => localStorage.setItem("bridge." + input.dataset.remember, input.value));
  }

  for (const form of document.querySelectorAll("form[data-api]")) {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (form.dataset.confirm) confirmStep(form, e.submitter);
      else send(form, e.submitter);
    });
  }

  const main = document.getElementById("main");
  if (main && main.dataset.live) live(main.dataset.live);
  tickAges();
  setInterval(tickAges, 1000);
})();
