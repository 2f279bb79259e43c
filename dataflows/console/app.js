// The tidings console (docs/console.md): plain JavaScript over the service's REST API.
// Every value shown is set as text (never as HTML), so nothing from the data can run here.
"use strict";

const $ = (sel) => document.querySelector(sel);
const main = $("#main");
let refresh = null;
// The route being shown: a page's answer that comes back after another route began is dropped
// (a slow job page must not draw over the SQL page opened meanwhile).
let seq = 0;
// Whether the banner shows a page's own failure to load (cleared once it loads again).
let loadError = false;

// For a page: whether the route it was drawn for is still the one shown.
function current() { const gen = seq; return () => gen === seq; }
// For a button: whether the page it was pressed on is still open, for the same job (its
// refreshes included), so
// a late answer neither shows its error over nor redraws a page opened since.
function onPage() { const at = location.hash, of = job(); return () => location.hash === at && job() === of; }

function token() { return sessionStorage.getItem("tidings-token") || ""; }
function job() { return sessionStorage.getItem("tidings-job") || ""; }

function showError(msg) {
  const e = $("#error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

// `signingIn`: the sign-in page's own check, whose 401 is the answer, not a lost sign-in.
async function api(method, path, body, signingIn) {
  const headers = { "Accept": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Error("the service did not answer: " + e.message);
  }
  const text = await r.text();
  let data;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  // The service's own token layer answers {"error": …}; a job's send API answers austin's
  // {"code": …}, whose 401 is about its callers, not this sign-in.
  if (r.status === 401 && !signingIn && data && data.error) { logout(); }
  if (!r.ok) {
    const msg = (data && (data.error || data.msg)) || text || r.statusText;
    const err = new Error(r.status + ": " + msg);
    err.status = r.status;
    throw err;
  }
  return data;
}

function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") for (const [ev, f] of Object.entries(v)) n.addEventListener(ev, f);
    else if (k === "class") n.className = v;
    else n.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

function table(columns, rows, id) {
  return el("table", { id: id || "" },
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((v, i) => {
      const text = v === null || v === undefined ? "" : (typeof v === "object" ? JSON.stringify(v) : String(v));
      const cls = columns[i] === "state" ? "state-" + text : "";
      return el("td", { class: cls }, text);
    })))));
}

function barChart(rows) {
  // rows: [label, number]; bars scaled to the largest.
  const max = Math.max(1, ...rows.map((r) => Number(r[1]) || 0));
  return el("div", { class: "card", id: "chart" }, rows.map((r) =>
    el("div", { class: "row" },
      el("span", { style: "width: 220px" }, String(r[0])),
      el("div", { class: "bar", style: `width: ${Math.round(((Number(r[1]) || 0) / max) * 600)}px` }),
      el("span", { class: "muted" }, String(r[1])))));
}

// Samples of each job's counts, kept while the console is open (for its charts).
const history = {};

function lineChart(samples, id) {
  const values = samples.length === 1 ? [samples[0], samples[0]] : samples;
  // An SVG polyline of `values` (oldest first), scaled to the largest; the last value beside it.
  const svgNs = "http://www.w3.org/2000/svg";
  const [w, hgt] = [600, 80];
  const max = Math.max(1, ...values);
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", hgt); svg.setAttribute("class", "line");
  const line = document.createElementNS(svgNs, "polyline");
  const step = values.length > 1 ? w / (values.length - 1) : w;
  line.setAttribute("points", values.map((v, i) => `${(i * step).toFixed(1)},${(hgt - 4 - (v / max) * (hgt - 8)).toFixed(1)}`).join(" "));
  svg.append(line);
  const last = values.length ? values[values.length - 1] : 0;
  return el("div", { class: "card row", id }, svg,
    el("span", { class: "muted" }, `now ${Math.round(last)} · max ${Math.round(max)} · ${samples.length} samples`));
}

function pre(value, id) { return el("pre", { id: id || "" }, JSON.stringify(value, null, 2)); }

async function loadJobs() {
  const jobs = await api("GET", "/jobs");
  const pick = $("#job");
  const picked = job();
  pick.replaceChildren(...jobs.map((j) => el("option", { value: j.name }, j.name)));
  if (jobs.length && !jobs.some((j) => j.name === picked)) sessionStorage.setItem("tidings-job", jobs[0].name);
  if (!jobs.length) sessionStorage.removeItem("tidings-job");
  pick.value = job();
  return jobs;
}

function needJob() {
  if (!job()) { main.append(el("p", { class: "muted" }, "No job yet: submit one on the Jobs page.")); return false; }
  return true;
}

const pages = {
  async login() {
    $("#nav").hidden = true; $("#job-pick").hidden = true; $("#logout").hidden = true; $("#role").textContent = "";
    const input = el("input", { id: "token", type: "password", placeholder: "token (empty on loopback)", size: 40 });
    const form = el("form", { id: "login", on: { submit: async (e) => {
      e.preventDefault();
      sessionStorage.setItem("tidings-token", input.value);
      try { await api("GET", "/jobs", undefined, true); location.hash = "#/jobs"; }
      catch (err) { sessionStorage.removeItem("tidings-token"); showError("sign-in failed: " + err.message); }
    } } }, el("h1", {}, "Sign in"), el("div", { class: "row" }, input, el("button", { id: "signin", type: "submit" }, "Sign in")),
      el("p", { class: "muted" }, "The service's --token (operators) or --read-token (support: read-only)."));
    main.replaceChildren(form);
  },

  async jobs() {
    const shown = current();
    const jobs = await loadJobs();
    if (!shown()) return;
    const path = el("input", { id: "submit-path", placeholder: "/abs/path/job.toml", size: 50 });
    const submit = el("form", { id: "submit-form", on: { submit: async (e) => {
      e.preventDefault();
      const here = onPage();
      try { await api("POST", "/jobs", { path: path.value }); path.value = ""; if (here()) { showError(""); route(); } }
      catch (err) { if (here()) showError(err.message); }
    } } }, el("div", { class: "row" }, path, el("button", { type: "submit", id: "submit-job" }, "Submit job")));
    const act = (name, what) => async () => {
      const here = onPage();
      try {
        if (what === "delete") await api("DELETE", "/jobs/" + encodeURIComponent(name));
        else await api("POST", `/jobs/${encodeURIComponent(name)}/${what}`);
        if (here()) { showError(""); route(); }
      } catch (err) { if (here()) showError(err.message); }
    };
    const rows = jobs.map((j) => el("tr", { "data-job": j.name },
      el("td", {}, el("a", { href: "#/job/" + encodeURIComponent(j.name) }, j.name)),
      el("td", { class: "state-" + j.state }, j.state), el("td", {}, j.pid ?? ""),
      el("td", {}, j.restarts ?? 0), el("td", {}, j.started_at ?? ""), el("td", {}, j.last_exit ?? ""),
      el("td", {}, el("button", { class: "plain", on: { click: act(j.name, "stop") } }, "Stop"), " ",
        el("button", { class: "plain", on: { click: act(j.name, "restart") } }, "Restart"), " ",
        el("button", { class: "plain", on: { click: act(j.name, "delete") } }, "Delete"))));
    // Already shown (a refresh): only the rows change, so what is typed in the form stays.
    const body = $("#jobs tbody");
    if (body && $("#submit-form")) {
      body.replaceChildren(...rows);
      // How many times the rows were drawn again (the browser test waits on it).
      body.dataset.refreshes = String(Number(body.dataset.refreshes || 0) + 1);
      return;
    }
    main.replaceChildren(el("h1", {}, "Jobs"), submit,
      el("table", { id: "jobs" }, el("thead", {}, el("tr", {}, ["name", "state", "pid", "restarts", "started", "last exit", ""].map((c) => el("th", {}, c)))),
        el("tbody", {}, rows)));
  },

  async job(name) {
    const shown = current();
    const j = await api("GET", "/jobs/" + encodeURIComponent(name));
    if (!shown()) return;
    const parts = [el("h1", {}, "Job " + name), el("p", {}, "state: ", el("span", { id: "job-state", class: "state-" + j.state }, j.state))];
    const live = j.live && !j.live.error ? j.live : null;
    if (live) {
      const rows = Object.entries((live.tracking && live.tracking.rows) || {});
      const total = rows.reduce((n, [, v]) => n + (Number(v) || 0), 0);
      const source = live.source || {};
      const lag = Number(source.lag) || 0;
      // The last 60 samples of this job (one per refresh), for the rate and lag charts.
      const h = (history[name] = (history[name] || []).concat([{ t: Date.now(), total, lag }]).slice(-60));
      const rates = h.slice(1).map((x, i) => Math.max(0, (x.total - h[i].total) / Math.max(0.001, (x.t - h[i].t) / 1000)));
      parts.push(el("p", {}, "watermark: ", el("span", { id: "watermark" }, (source.event_time && source.event_time.low_watermark) || "–"),
        " · lag: ", el("span", { id: "lag" }, String(lag)), " records · last checkpoint: ",
        (source.checkpoint && source.checkpoint.last) || "–"));
      parts.push(el("h2", {}, "Rows per second"), lineChart(rates, "rate-chart"),
        el("h2", {}, "Lag (records behind the topic's end)"), lineChart(h.map((x) => x.lag), "lag-chart"));
      if (rows.length) parts.push(el("h2", {}, "Receivers per state"), barChart(rows));
    }
    parts.push(el("h2", {}, "Status"), pre(j, "job-detail"));
    main.replaceChildren(...parts);
  },

  async templates() {
    const shown = current();
    await loadJobs();
    if (!shown() || !needJob()) return;
    const data = await api("GET", `/jobs/${encodeURIComponent(job())}/templates`);
    if (!shown()) return;
    // A Kafka job's door knows the versions made through the service; a file job has none.
    const versions = Object.fromEntries((data.versions || []).map((v) => [v.id, v]));
    const rows = data.templates.map((t) => ({ ...t, version: versions[t.id] ? versions[t.id].version : 0,
      enabled: versions[t.id] ? versions[t.id].enabled : true }));
    for (const v of data.versions || []) {
      if (!rows.some((t) => t.id === v.id) && v.template) rows.push({ ...v.template, version: v.version, enabled: v.enabled });
    }
    const list = el("table", { id: "templates" },
      el("thead", {}, el("tr", {}, ["id", "name", "channel", "msg_type", "shield", "account", "version", "variables", ""].map((c) => el("th", {}, c)))),
      el("tbody", {}, rows.map((t) => el("tr", { "data-row": t.id },
        [t.id, t.name, t.channel, t.msg_type, t.shield, t.account, t.enabled ? t.version : t.version + " (disabled)", (t.variables || []).join(", ")]
          .map((v) => el("td", {}, String(v ?? ""))),
        el("td", {}, el("button", { class: "plain", "data-template": t.id, on: { click: () => editor(versions[t.id] && versions[t.id].template ? { ...versions[t.id].template, variables: t.variables } : t) } }, "Open"))))));
    const box = el("div", { id: "editor" });
    main.replaceChildren(el("h1", {}, "Templates of " + data.job), list,
      data.versions_error
        ? el("p", { class: "state-failed", id: "versions-error" }, "The job's send API cannot be made now, so its live versions are unknown: " + data.versions_error)
        : el("p", { class: "muted" }, data.versions
          ? "Changes apply to requests accepted after they are saved, in every worker, and survive restarts (docs/templates.md)."
          : "This job reads a file: a change is a line appended to it (docs/templates.md, Live changes)."), box);
    function editor(t) {
      const inputs = Object.fromEntries((t.variables || []).map((v) => [v, el("input", { name: v, placeholder: v })]));
      const out = el("div", { id: "preview" });
      const receiver = el("input", { id: "test-receiver", placeholder: "receiver for a test send" });
      const vars = () => Object.fromEntries(Object.entries(inputs).map(([k, i]) => [k, i.value]));
      const editable = { ...t };
      delete editable.variables; delete editable.version; delete editable.enabled;
      const source = el("textarea", { id: "template-json", rows: 12 });
      source.value = JSON.stringify(editable, null, 2);
      const change = (path, body) => async () => {
        const here = onPage();
        try {
          const r = await api("POST", `/jobs/${encodeURIComponent(job())}/templates${path}`, body === undefined ? undefined : body());
          if (!here()) return;
          showError("");
          await pages.templates();
          if (here()) $("#editor").append(el("p", { id: "saved" }, `saved: template ${r.data.id} version ${r.data.version} from ${new Date(r.data.eventTime).toISOString()} (${r.data.source})`));
        } catch (err) { if (here()) showError(err.message); }
      };
      const parse = () => JSON.parse(source.value);
      box.replaceChildren(el("h2", {}, `Template ${t.id}: ${t.name}`), pre(t.content, "template-content"),
        ...Object.entries(inputs).map(([k, i]) => el("div", { class: "row" }, el("label", {}, k + " "), i)),
        el("div", { class: "row" },
          el("button", { id: "do-preview", on: { click: async () => {
            const here = onPage();
            try { const p = await api("POST", `/jobs/${encodeURIComponent(job())}/preview`, { template: t.id, variables: vars() });
              out.replaceChildren(el("h2", {}, "Rendered"), pre(p.rendered, "rendered"),
                p.too_long ? el("p", { class: "state-failed", id: "too-long" }, "Too long for the channel: a request with these values would be a dead letter: " + p.too_long) : null,
                el("h2", {}, "Rules that apply"), pre(p.rules, "rules")); if (here()) showError(""); }
            catch (err) { out.replaceChildren(el("p", { class: "state-failed", id: "render-error" }, err.message)); }
          } } }, "Preview"),
          receiver,
          el("button", { id: "test-send", on: { click: async () => {
            const here = onPage();
            try { const r = await api("POST", `/jobs/${encodeURIComponent(job())}/send`, { code: "send", messageTemplateId: t.id,
                messageParam: { receiver: receiver.value, variables: vars() } });
              out.replaceChildren(el("p", { id: "sent" }, "sent: messageId ", (r.data && r.data[0] && r.data[0].messageId) || "")); if (here()) showError(""); }
            catch (err) { if (here()) showError(err.message); }
          } } }, "Test send")),
        out,
        el("h2", {}, "Edit"), source,
        el("div", { class: "row" },
          el("button", { id: "save-template", on: { click: () => {
            try { parse(); } catch (err) { showError("not JSON: " + err.message); return; }
            change("", parse)();
          } } }, "Save (applies from now on)"),
          el("button", { class: "plain", id: "disable-template", on: { click: change(`/${t.id}/disable`) } }, "Disable")));
    }
  },

  async trace() {
    const shown = current();
    await loadJobs();
    if (!shown() || !needJob()) return;
    const q = new URLSearchParams(location.hash.split("?")[1] || "");
    const receiver = el("input", { id: "trace-receiver", placeholder: "receiver", value: q.get("receiver") || "" });
    const message = el("input", { id: "trace-message", placeholder: "messageId", value: q.get("message") || "" });
    const out = el("div", { id: "trace-out" });
    const run = async () => {
      const here = onPage();
      const params = new URLSearchParams();
      if (receiver.value) params.set("receiver", receiver.value);
      if (message.value) params.set("message", message.value);
      try {
        const t = await api("GET", `/jobs/${encodeURIComponent(job())}/trace?${params}`);
        const parts = [];
        // Real time from Redis when the job tracks there (Parquet lags by a flush interval).
        if (t.redis && t.redis.rows) {
          const cols = [...new Set(t.redis.rows.flatMap((r) => Object.keys(r)))];
          parts.push(el("h2", {}, "Live (Redis)"), el("p", { class: "muted" }, `${t.redis.rows.length} state(s), oldest first` +
              (t.redis.truncated ? ": the newest only, older ones left out" : "")),
            table(cols, t.redis.rows.map((r) => cols.map((c) => (c === "time" && typeof r[c] === "number" ? new Date(r[c]).toISOString() : r[c]))), "redis-timeline"));
        } else if (t.redis && t.redis.error) {
          parts.push(el("p", { class: "state-failed" }, t.redis.error));
        }
        parts.push(el("h2", {}, "History (Parquet)"), el("p", { class: "muted", id: "timeline-note" }, `${t.rows.length} state(s), oldest first` +
            (t.truncated ? ": the newest only, older ones left out (narrow it to a messageId, or ask SQL)" : "")), table(t.columns, t.rows, "timeline"));
        out.replaceChildren(...parts);
        if (here()) showError("");
      } catch (err) { if (here()) showError(err.message); }
    };
    main.replaceChildren(el("h1", {}, "Why did (or didn't) they get it?"),
      el("form", { on: { submit: (e) => { e.preventDefault(); run(); } } },
        el("div", { class: "row" }, receiver, "or", message, el("button", { id: "trace-run", type: "submit" }, "Trace"))), out);
    if (receiver.value || message.value) run();
  },

  async reports() {
    const shown = current();
    await loadJobs();
    if (!shown() || !needJob()) return;
    const list = await api("GET", "/reports");
    if (!shown()) return;
    const pick = el("select", { id: "report-name" }, list.map((r) => el("option", { value: r.name }, `${r.name}: ${r.description}`)));
    const date = el("input", { id: "report-date", placeholder: "date YYYY-MM-DD (all)", size: 22 });
    const template = el("input", { id: "report-template", placeholder: "template id (all)", size: 14 });
    const receiver = el("input", { id: "report-receiver", placeholder: "receiver (all)", size: 18 });
    const out = el("div", { id: "report-out" });
    const run = async () => {
      const here = onPage();
      const body = {};
      if (date.value.trim()) body.date = date.value.trim();
      // Not an integer: sent as typed, and the service says what it wants (Number("7x") was
      // NaN, sent as null: a report over every template).
      const t = template.value.trim();
      if (t) body.template = /^-?\d+$/.test(t) ? Number(t) : t;
      if (receiver.value.trim()) body.receiver = receiver.value.trim();
      try {
        const r = await api("POST", `/jobs/${encodeURIComponent(job())}/reports/${encodeURIComponent(pick.value)}`, body);
        const parts = [table(r.columns, r.rows, "report-result")];
        if (r.truncated) parts.unshift(el("p", { class: "muted" }, "first rows only"));
        // A label and a number: charted too (the last numeric column against the first).
        const n = r.columns.length;
        if (n >= 2 && r.rows.length && r.rows.every((x) => typeof x[n - 1] === "number")) {
          parts.push(barChart(r.rows.map((x) => [x.slice(0, n - 1).join(" · "), x[n - 1]])));
        }
        out.replaceChildren(...parts);
        if (here()) showError("");
      } catch (err) { if (here()) showError(err.message); }
    };
    main.replaceChildren(el("h1", {}, "Reports"),
      el("div", { class: "row" }, pick, date, template, receiver, el("button", { id: "report-run", on: { click: run } }, "Run")),
      el("p", { class: "muted" }, "The named reports of `tidings report` (sql/queries/), in the job's time zone."), out);
  },

  async sql() {
    const shown = current();
    await loadJobs();
    if (!shown() || !needJob()) return;
    const text = el("textarea", { id: "sql-text", rows: 6 });
    text.value = sessionStorage.getItem("tidings-sql") || "SELECT state, count(*) AS n FROM events GROUP BY state ORDER BY n DESC";
    const out = el("div", { id: "sql-out" });
    const run = async () => {
      const here = onPage();
      sessionStorage.setItem("tidings-sql", text.value);
      try {
        const r = await api("POST", `/jobs/${encodeURIComponent(job())}/sql`, { query: text.value });
        const parts = [table(r.columns, r.rows, "sql-result")];
        if (r.truncated) parts.unshift(el("p", { class: "muted" }, "first rows only"));
        if (r.columns.length === 2 && r.rows.length && r.rows.every((x) => typeof x[1] === "number")) parts.push(barChart(r.rows));
        out.replaceChildren(...parts);
        if (here()) showError("");
      } catch (err) { if (here()) showError(err.message); }
    };
    main.replaceChildren(el("h1", {}, "SQL over events and dead_letters"), text,
      el("div", { class: "row" }, el("button", { id: "sql-run", on: { click: run } }, "Run"),
        el("span", { class: "muted" }, "read-only; tables: events, dead_letters (docs/tables.md)")), out);
  },

  async state() {
    const shown = current();
    await loadJobs();
    if (!shown() || !needJob()) return;
    const receiver = el("input", { id: "state-receiver", placeholder: "receiver" });
    // A frequency count is per receiver and channel (a template names its channel); dedup
    // windows are per receiver and rendered content (a template and its variables).
    const template = el("input", { id: "state-template", placeholder: "template id", size: 12 });
    const channel = el("input", { id: "state-channel", placeholder: "or channel (frequency)", size: 20 });
    const variables = el("input", { id: "state-variables", placeholder: 'variables, e.g. {"code": "4711", "price": "9.90"}', size: 40 });
    const out = el("div", { id: "state-out" });
    const show = (path) => async () => {
      const here = onPage();
      try { out.replaceChildren(pre(await api("GET", `/jobs/${encodeURIComponent(job())}${path}`), "state-json")); if (here()) showError(""); }
      catch (err) { if (here()) showError(err.message); }
    };
    const keyed = (what, withVariables) => () => {
      if (!receiver.value.trim()) { showError("give a receiver"); return; }
      const q = new URLSearchParams({ receiver: receiver.value.trim() });
      if (template.value.trim()) q.set("template", template.value.trim());
      if (!withVariables && channel.value.trim()) q.set("channel", channel.value.trim());
      if (withVariables && variables.value.trim()) {
        let vars;
        try { vars = JSON.parse(variables.value); } catch (err) { showError("variables: not JSON: " + err.message); return; }
        if (vars === null || typeof vars !== "object" || Array.isArray(vars)) { showError('variables: a JSON object, e.g. {"code": "4711"}'); return; }
        for (const [k, v] of Object.entries(vars)) q.set("var." + k, typeof v === "string" ? v : JSON.stringify(v));
      }
      return show(`/state/${what}?${q}`)();
    };
    main.replaceChildren(el("h1", {}, "Live state"),
      el("div", { class: "row" },
        el("button", { class: "plain", on: { click: show("/state") } }, "Summary"),
        el("button", { class: "plain", on: { click: show("/state/park") } }, "Parked"),
        el("button", { class: "plain", on: { click: show("/state/accounts") } }, "Account queues"),
        el("button", { class: "plain", on: { click: show("/state/source") } }, "Source")),
      el("div", { class: "row" }, receiver, template, channel,
        el("button", { class: "plain", id: "state-frequency", on: { click: keyed("frequency", false) } }, "Frequency count")),
      el("div", { class: "row" }, variables,
        el("button", { class: "plain", id: "state-content", on: { click: keyed("content", true) } }, "Dedup windows")),
      out);
  },
};

function logout() {
  sessionStorage.removeItem("tidings-token");
  if (location.hash !== "#/login") location.hash = "#/login";
}

async function route() {
  clearTimeout(refresh);
  refresh = null;
  const gen = ++seq;
  const hash = location.hash || "#/jobs";
  const [path] = hash.slice(2).split("?");
  const [page, arg] = path.split("/");
  if (page !== "login" && sessionStorage.getItem("tidings-token") === null) { location.hash = "#/login"; return; }
  if (page !== "login") {
    $("#nav").hidden = false; $("#job-pick").hidden = false; $("#logout").hidden = false;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  }
  // The jobs list and a job's page are drawn again every 3 s, whether or not this time failed
  // (a service restarting answers again soon).
  const refreshing = page !== "login" && (!pages[page] || page === "jobs" || page === "job");
  try {
    await (pages[page] || pages.jobs)(arg && decodeURIComponent(arg));
    if (loadError && gen === seq) { showError(""); loadError = false; }
  } catch (err) {
    if (gen === seq) { showError(err.message); loadError = true; }
  } finally {
    if (refreshing && gen === seq) refresh = setTimeout(route, 3000);
  }
}

// Another page, or another job: the last page's message goes.
function navigate() { showError(""); loadError = false; route(); }

$("#job").addEventListener("change", (e) => { sessionStorage.setItem("tidings-job", e.target.value); navigate(); });
$("#logout").addEventListener("click", logout);
window.addEventListener("hashchange", navigate);
route();
