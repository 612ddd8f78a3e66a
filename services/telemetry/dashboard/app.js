/*
 * Operator dashboard of the plugin platform.
 *
 * Plain JavaScript, no dependencies and nothing loaded from another origin: it signs in through the gateway
 * (POST /api/plugins/auth/signin), keeps the token pair in sessionStorage, reads
 * /api/admin/telemetry/summary and /timeseries for the chosen window and draws its charts as inline SVG.
 * Every chart mark carries data-* attributes (data-series, data-slot, data-value, ...) so tests and people with
 * devtools can read the exact numbers behind it.
 */
(() => {
  "use strict";

  const API = {
    signin: "/api/plugins/auth/signin",
    refresh: "/api/plugins/auth/refresh",
    signout: "/api/plugins/auth/signout",
    summary: "/api/admin/telemetry/summary",
    timeseries: "/api/admin/telemetry/timeseries",
  };
  const SESSION_KEY = "renderiq.operator.session";
  const WINDOW_KEY = "renderiq.operator.window";
  const AUTO_REFRESH_MS = 60_000;
  const WINDOWS = {
    "1h": { ms: 3_600_000, step: "minute", label: "last hour" },
    "24h": { ms: 86_400_000, step: "hour", label: "last 24 hours" },
    "7d": { ms: 7 * 86_400_000, step: "hour", label: "last 7 days" },
  };
  const STEP_MS = { minute: 60_000, hour: 3_600_000, day: 86_400_000 };
  const PLATFORM_COLORS = {
    sketchup: "#d9534f",
    revit: "#3b6fb6",
    autocad: "#9b6bb3",
    rhino: "#2a9d8f",
    archicad: "#5a9e3a",
    blender: "#ee8a22",
    unknown: "#9aa0a6",
  };
  const EXTRA_COLORS = ["#c2a83e", "#7a5c3e", "#d36ba6", "#4c8c99"];
  const PLATFORM_NAMES = {
    sketchup: "SketchUp",
    revit: "Revit",
    autocad: "AutoCAD",
    rhino: "Rhino",
    archicad: "Archicad",
    blender: "Blender",
    unknown: "Unknown",
  };
  const COLORS = {
    p50: "#3b6fb6",
    p95: "#ee8a22",
    rate: "#2f8f57",
    succeeded: "#3f9a5c",
    failed: "#d64545",
    disabled: "#7a1f1f",
  };
  const STATUSES = ["created", "processing", "completed", "failed", "canceled"];

  // ---------------------------------------------------------------- state
  const state = {
    session: loadSession(),
    windowKey: sessionStorage.getItem(WINDOW_KEY) in WINDOWS ? sessionStorage.getItem(WINDOW_KEY) : "24h",
    summary: null,
    series: null,
    loadSeq: 0,
    timer: null,
    refreshing: null,
  };

  const $ = (selector, root = document) => root.querySelector(selector);
  const el = {};

  // ---------------------------------------------------------------- formatting
  const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const fmtInt = (n) => (n === null || n === undefined ? "—" : intFmt.format(n));
  const fmtPct = (r, digits = 1) => (r === null || r === undefined ? "—" : `${(r * 100).toFixed(digits)}%`);
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "—";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
    return `${(ms / 60_000).toFixed(1)} min`;
  }
  const platformName = (p) => PLATFORM_NAMES[p] || p;
  function platformColor(p, index) {
    return PLATFORM_COLORS[p] || EXTRA_COLORS[index % EXTRA_COLORS.length];
  }
  const pad2 = (n) => String(n).padStart(2, "0");
  const hhmm = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  const dayLabel = (d) => d.toLocaleDateString(undefined, { weekday: "short", day: "numeric", month: "short" });
  function slotLabel(date, step, long) {
    if (step === "day") return dayLabel(date);
    if (long || step === "hour") return `${dayLabel(date)} ${hhmm(date)}`;
    return hhmm(date);
  }
  function timeZoneName() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    } catch {
      return "local time";
    }
  }

  // ---------------------------------------------------------------- session
  function loadSession() {
    try {
      const raw = sessionStorage.getItem(SESSION_KEY);
      return raw ? JSON.parse(raw) : null;
    } catch {
      return null;
    }
  }
  function saveSession(session) {
    state.session = session;
    if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    else sessionStorage.removeItem(SESSION_KEY);
  }

  // ---------------------------------------------------------------- HTTP
  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || {};
    }
  }

  async function request(path, { method = "GET", body, token } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "NETWORK_ERROR", "The gateway could not be reached. Check your connection.");
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
    if (!response.ok || (payload && payload.success === false)) {
      let message = (payload && payload.error) || `${response.status} ${response.statusText || "error"}`;
      const retry = response.headers.get("Retry-After");
      if (response.status === 429 && retry) message += ` Try again in ${retry} s.`;
      throw new ApiError(response.status, (payload && payload.errorCode) || `HTTP_${response.status}`, message,
        payload && payload.details);
    }
    return payload;
  }

  /** An operator call; on an expired or invalid access token, refresh once and retry. */
  async function operatorGet(path) {
    if (!state.session) throw new ApiError(401, "AUTH_REQUIRED", "Please sign in.");
    const token = state.session.accessToken;
    try {
      return await request(path, { token });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401 || !state.session || !state.session.refreshToken) {
        throw error;
      }
      await refreshTokens(token);
      return request(path, { token: state.session.accessToken });
    }
  }

  /**
   * One refresh at a time: the page's calls run in parallel, and presenting a refresh token twice counts as
   * reuse, which revokes the whole token family. Calls that saw the same stale token share one refresh.
   */
  function refreshTokens(staleToken) {
    if (state.session && state.session.accessToken !== staleToken) return Promise.resolve();
    if (!state.refreshing) {
      const session = state.session;
      state.refreshing = request(API.refresh, { method: "POST", body: { refresh_token: session.refreshToken } })
        .then((refreshed) => {
          saveSession({ ...session, accessToken: refreshed.access_token, refreshToken: refreshed.refresh_token });
        })
        .finally(() => {
          state.refreshing = null;
        });
    }
    return state.refreshing;
  }

  // ---------------------------------------------------------------- views
  function showLogin({ error = null, notice = null } = {}) {
    stopAutoRefresh();
    state.summary = null;
    state.series = null;
    el.dashboard.hidden = true;
    el.sessionBar.hidden = true;
    el.login.hidden = false;
    clearDashboard();
    setAlert(el.loginError, error);
    setAlert(el.loginNotice, notice);
    setBusy(false);
    el.password.value = "";
    (el.email.value ? el.password : el.email).focus();
  }

  function showDashboard() {
    el.login.hidden = true;
    el.dashboard.hidden = false;
    el.sessionBar.hidden = false;
    el.signedInAs.textContent = state.session.email || "";
    setAlert(el.loginError, null);
    setAlert(el.loginNotice, null);
  }

  function setAlert(node, content) {
    node.replaceChildren();
    if (!content) {
      node.hidden = true;
      return;
    }
    if (typeof content === "string") {
      node.textContent = content;
    } else {
      const title = document.createElement("strong");
      title.textContent = content.title;
      const message = document.createElement("span");
      message.className = "alert-message";
      message.textContent = content.message;
      node.append(title, message);
      if (content.code) {
        const code = document.createElement("code");
        code.className = "alert-code";
        code.dataset.testid = "error-code";
        code.textContent = content.code;
        node.append(code);
      }
    }
    node.hidden = false;
  }

  function setBusy(busy) {
    el.submit.disabled = busy;
    el.submit.textContent = busy ? "Signing in…" : "Sign in";
  }

  function explain(error) {
    if (!(error instanceof ApiError)) {
      return { title: "Something went wrong.", message: String(error && error.message ? error.message : error) };
    }
    if (error.code === "INSUFFICIENT_PERMISSIONS") {
      return {
        title: "Access denied: this account is not an operator.",
        message: error.message,
        code: `${error.status} ${error.code}`,
      };
    }
    if (error.code === "INVALID_CREDENTIALS") {
      return { title: "Sign-in failed.", message: error.message, code: error.code };
    }
    if (error.status === 401) {
      return { title: "Your session has ended: please sign in again.", message: error.message, code: error.code };
    }
    return { title: "The request failed.", message: error.message, code: error.status ? error.code : null };
  }

  // ---------------------------------------------------------------- sign-in / sign-out
  async function onSubmit(event) {
    event.preventDefault();
    const email = el.email.value.trim();
    const password = el.password.value;
    if (!email || !password) {
      setAlert(el.loginError, { title: "Sign-in failed.", message: "Enter your email and password." });
      return;
    }
    setAlert(el.loginError, null);
    setAlert(el.loginNotice, null);
    setBusy(true);
    try {
      const auth = await request(API.signin, { method: "POST", body: { email, password } });
      saveSession({
        accessToken: auth.access_token,
        refreshToken: auth.refresh_token,
        email: (auth.user && auth.user.email) || email,
      });
      // Only an operator may read the figures: try before showing anything.
      await load({ firstLoad: true });
    } catch (error) {
      await forgetSession();
      showLogin({ error: explain(error) });
      el.email.value = email;
    } finally {
      setBusy(false);
    }
  }

  async function forgetSession() {
    const session = state.session;
    saveSession(null);
    if (session && session.refreshToken) {
      try {
        await request(API.signout, { method: "POST", body: { refresh_token: session.refreshToken } });
      } catch {
        // Signing out is best effort: the tokens are gone from this page either way.
      }
    }
  }

  async function onSignOut() {
    await forgetSession();
    el.email.value = "";
    showLogin({ notice: "Signed out." });
  }

  // ---------------------------------------------------------------- loading
  function windowBounds() {
    const spec = WINDOWS[state.windowKey];
    const until = new Date();
    const since = new Date(until.getTime() - spec.ms);
    return { since, until, step: spec.step };
  }

  async function load({ firstLoad = false } = {}) {
    const seq = ++state.loadSeq;
    const { since, until, step } = windowBounds();
    const query = `since=${encodeURIComponent(since.toISOString())}&until=${encodeURIComponent(until.toISOString())}`;
    el.dashboard.setAttribute("aria-busy", "true");
    el.refresh.disabled = true;
    try {
      const [summary, series] = await Promise.all([
        operatorGet(`${API.summary}?${query}`),
        operatorGet(`${API.timeseries}?${query}&step=${step}`),
      ]);
      if (seq !== state.loadSeq) return;
      state.summary = summary.data;
      state.series = series.data;
      showDashboard();
      setAlert(el.dashError, null);
      render();
      el.windowLabel.textContent =
        `${WINDOWS[state.windowKey].label}: ${slotLabel(since, "hour", true)} – ${hhmm(until)}` +
        ` · per ${step} · updated ${until.toLocaleTimeString()}`;
      el.dashboard.dataset.loaded = String(seq);
      scheduleAutoRefresh();
    } catch (error) {
      if (seq !== state.loadSeq) return;
      if (firstLoad) throw error;
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        await forgetSession();
        showLogin({ error: explain(error) });
        return;
      }
      setAlert(el.dashError, explain(error));
      scheduleAutoRefresh();
    } finally {
      if (seq === state.loadSeq) {
        el.dashboard.setAttribute("aria-busy", "false");
        el.refresh.disabled = false;
      }
    }
  }

  function scheduleAutoRefresh() {
    stopAutoRefresh();
    state.timer = setTimeout(() => {
      if (document.visibilityState === "visible" && state.session) load();
      else scheduleAutoRefresh();
    }, AUTO_REFRESH_MS);
  }
  function stopAutoRefresh() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }

  function selectWindow(key) {
    if (!(key in WINDOWS)) return;
    state.windowKey = key;
    sessionStorage.setItem(WINDOW_KEY, key);
    for (const button of el.windowSelect.querySelectorAll("[data-window]")) {
      const on = button.dataset.window === key;
      button.setAttribute("aria-checked", String(on));
      button.tabIndex = on ? 0 : -1;
    }
    if (state.session) load();
  }

  // ---------------------------------------------------------------- rendering
  function clearDashboard() {
    for (const node of document.querySelectorAll(".chart, .legend")) node.replaceChildren();
    for (const body of document.querySelectorAll("table.data tbody")) body.replaceChildren();
    for (const kpi of document.querySelectorAll(".kpi")) {
      $(".kpi-value", kpi).textContent = "–";
      $(".kpi-value", kpi).dataset.value = "";
      $(".kpi-sub", kpi).textContent = "";
    }
    delete el.dashboard.dataset.loaded;
  }

  function render() {
    renderKpis();
    renderRendersChart();
    renderSuccessChart();
    renderTimeChart();
    renderWebhookChart();
    renderPlatformTable();
    renderRouteTable();
  }

  function totals() {
    const sum = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const p of state.summary.platforms) for (const s of STATUSES) sum[s] += p.renders[s] || 0;
    return sum;
  }

  function setKpi(testid, value, text, sub, tone) {
    const kpi = document.querySelector(`[data-testid="${testid}"]`);
    const valueNode = $(".kpi-value", kpi);
    valueNode.textContent = text;
    valueNode.dataset.value = value === null || value === undefined ? "" : String(value);
    $(".kpi-sub", kpi).textContent = sub;
    kpi.dataset.tone = tone || "";
  }

  function rateTone(rate, warn, bad) {
    if (rate === null || rate === undefined) return "";
    if (rate < bad) return "bad";
    if (rate < warn) return "warn";
    return "good";
  }

  function renderKpis() {
    const s = state.summary;
    const t = totals();
    const used = s.platforms.filter((p) => p.activeUsers > 0).length;
    setKpi("kpi-active-users", s.activeUsers, fmtInt(s.activeUsers),
      `on ${used} platform${used === 1 ? "" : "s"}`);
    setKpi("kpi-renders", t.created, fmtInt(t.created),
      `${fmtInt(t.completed)} completed · ${fmtInt(t.failed)} failed · ${fmtInt(t.canceled)} canceled`);
    const finished = t.completed + t.failed;
    const rate = finished ? t.completed / finished : null;
    setKpi("kpi-success-rate", rate === null ? null : Number(rate.toFixed(4)), fmtPct(rate),
      finished ? `${fmtInt(t.completed)} of ${fmtInt(finished)} finished renders` : "no finished renders",
      rateTone(rate, 0.95, 0.8));
    const requests = s.routes.reduce((n, r) => n + r.requests, 0);
    const errors = s.routes.reduce((n, r) => n + r.errors, 0);
    const errorRate = requests ? errors / requests : null;
    setKpi("kpi-requests", requests, fmtInt(requests),
      requests ? `${fmtPct(errorRate)} errors (${fmtInt(errors)})` : "no requests",
      errorRate === null ? "" : errorRate > 0.2 ? "bad" : errorRate > 0.05 ? "warn" : "good");
    const w = s.webhooks;
    setKpi("kpi-webhooks", w.successRate, w.attempts ? fmtPct(w.successRate) : "—",
      w.attempts
        ? `p95 ${fmtMs(w.latencyMs.p95)} · ${fmtInt(w.attempts)} attempts` +
          (w.disabledEndpoints ? ` · ${fmtInt(w.disabledEndpoints)} disabled` : "")
        : "no deliveries",
      rateTone(w.attempts ? w.successRate : null, 0.95, 0.8));
    const kpi = document.querySelector('[data-testid="kpi-webhooks"]');
    kpi.dataset.p95 = w.latencyMs.p95 === null ? "" : String(w.latencyMs.p95);
  }

  function slotDates() {
    return state.series.slots.map((iso) => new Date(iso));
  }

  function platformOrder() {
    const names = new Set(Object.keys(state.series.renders));
    for (const p of state.summary.platforms) names.add(p.platform);
    const known = Object.keys(PLATFORM_COLORS);
    return [...names].sort((a, b) => {
      const ia = known.indexOf(a);
      const ib = known.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
  }

  function renderRendersChart() {
    const status = el.rendersStatus.value;
    const slots = slotDates();
    const platforms = platformOrder();
    const series = platforms
      .map((platform, i) => ({
        key: platform,
        label: platformName(platform),
        color: platformColor(platform, i),
        values: (state.series.renders[platform] && state.series.renders[platform][status]) || slots.map(() => 0),
        attrs: { "data-platform": platform, "data-status": status },
      }))
      .filter((s) => s.values.some((v) => v > 0));
    const container = el.chartRenders;
    container.dataset.status = status;
    barChart(container, {
      slots,
      step: state.series.step,
      series,
      unit: `${status} renders`,
      empty: `No ${status} renders in this window.`,
      label: `Renders per platform (${status}) per ${state.series.step}`,
    });
    legend(el.legendRenders, series.map((s) => ({
      ...s,
      text: `${s.label} ${fmtInt(s.values.reduce((a, b) => a + b, 0))}`,
    })));
  }

  function renderSuccessChart() {
    lineChart(el.chartSuccess, {
      slots: slotDates(),
      step: state.series.step,
      series: [{ key: "successRate", label: "Success rate", color: COLORS.rate, values: state.series.successRate }],
      yMax: 1,
      format: (v) => fmtPct(v, 0),
      tooltipFormat: (v) => fmtPct(v, 1),
      area: true,
      empty: "No finished renders in this window.",
      label: "Render success rate per slot",
    });
  }

  function renderTimeChart() {
    const series = [
      { key: "p50", label: "p50", color: COLORS.p50, values: state.series.renderTimeMs.p50 },
      { key: "p95", label: "p95", color: COLORS.p95, values: state.series.renderTimeMs.p95 },
    ];
    lineChart(el.chartTime, {
      slots: slotDates(),
      step: state.series.step,
      series,
      format: fmtMs,
      tooltipFormat: fmtMs,
      empty: "No completed renders in this window.",
      label: "Render time percentiles per slot",
    });
    legend(el.legendTime, series.map((s) => ({ ...s, text: s.label })));
  }

  function renderWebhookChart() {
    const w = state.series.webhooks;
    const series = [
      { key: "succeeded", label: "Succeeded", color: COLORS.succeeded, values: w.succeeded },
      { key: "failed", label: "Failed", color: COLORS.failed, values: w.failed },
    ];
    barChart(el.chartWebhooks, {
      slots: slotDates(),
      step: state.series.step,
      series: series.filter((s) => s.values.some((v) => v > 0)),
      markers: { key: "disabled", label: "Endpoints disabled", color: COLORS.disabled, values: w.disabled },
      unit: "attempts",
      empty: "No webhook deliveries in this window.",
      label: "Webhook delivery attempts per slot",
    });
    const items = series.map((s) => ({ ...s, text: `${s.label} ${fmtInt(s.values.reduce((a, b) => a + b, 0))}` }));
    const disabled = w.disabled.reduce((a, b) => a + b, 0);
    if (disabled) items.push({ key: "disabled", color: COLORS.disabled, text: `Disabled ${fmtInt(disabled)}`, marker: true });
    legend(el.legendWebhooks, items);
    const s = state.summary.webhooks;
    el.webhooksNote.textContent = s.attempts
      ? `delivery attempts per slot · p50 ${fmtMs(s.latencyMs.p50)}, p95 ${fmtMs(s.latencyMs.p95)}`
      : "delivery attempts per slot";
  }

  function legend(node, items) {
    node.replaceChildren();
    for (const item of items) {
      const li = document.createElement("li");
      li.dataset.series = item.key;
      const swatch = document.createElement("span");
      swatch.className = item.marker ? "swatch swatch-marker" : "swatch";
      swatch.style.backgroundColor = item.color;
      const text = document.createElement("span");
      text.textContent = item.text;
      li.append(swatch, text);
      node.append(li);
    }
  }

  // ---------------------------------------------------------------- tables
  function cell(row, text, { col, value, className, title } = {}) {
    const td = document.createElement("td");
    td.textContent = text;
    if (col) td.dataset.col = col;
    if (value !== undefined) td.dataset.value = value === null ? "" : String(value);
    if (className) td.className = className;
    if (title) td.title = title;
    row.append(td);
    return td;
  }

  function figureCells(row, g) {
    cell(row, fmtInt(g.activeUsers), { col: "activeUsers", value: g.activeUsers });
    cell(row, fmtInt(g.requests), { col: "requests", value: g.requests });
    for (const s of STATUSES) {
      const n = g.renders[s] || 0;
      cell(row, fmtInt(n), { col: s, value: n, className: n === 0 ? "zero" : s === "failed" ? "num-bad" : "" });
    }
    const rate = cell(row, fmtPct(g.successRate), { col: "successRate", value: g.successRate });
    const tone = rateTone(g.successRate, 0.95, 0.8);
    if (tone) rate.classList.add(`tone-${tone}`);
    cell(row, fmtMs(g.renderTimeMs.p50), { col: "renderTimeP50", value: g.renderTimeMs.p50 });
    cell(row, fmtMs(g.renderTimeMs.p95), { col: "renderTimeP95", value: g.renderTimeMs.p95 });
    cell(row, fmtMs(g.queueWaitMs.p50), { col: "queueWaitP50", value: g.queueWaitMs.p50 });
    cell(row, fmtMs(g.queueWaitMs.p95), { col: "queueWaitP95", value: g.queueWaitMs.p95 });
    cell(row, fmtInt(g.creditsSpent), { col: "creditsSpent", value: g.creditsSpent });
  }

  function emptyRow(body, columns, text) {
    const row = document.createElement("tr");
    row.className = "empty";
    const td = document.createElement("td");
    td.colSpan = columns;
    td.textContent = text;
    row.append(td);
    body.append(row);
  }

  function renderPlatformTable() {
    const body = $("tbody", el.tablePlatforms);
    body.replaceChildren();
    const order = platformOrder();
    const platforms = [...state.summary.platforms].sort(
      (a, b) => b.renders.created - a.renders.created || b.requests - a.requests || a.platform.localeCompare(b.platform),
    );
    if (!platforms.length) emptyRow(body, 14, "No plugin traffic in this window.");
    for (const p of platforms) {
      const row = document.createElement("tr");
      row.className = "platform-row";
      row.dataset.platform = p.platform;
      row.dataset.level = "platform";
      const th = document.createElement("th");
      th.scope = "row";
      th.className = "left";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = platformColor(p.platform, order.indexOf(p.platform));
      const name = document.createElement("span");
      name.textContent = platformName(p.platform);
      th.append(swatch, name);
      row.append(th);
      figureCells(row, p);
      body.append(row);
      const versions = [...p.versions].sort((a, b) =>
        compareVersions(b.pluginVersion, a.pluginVersion));
      for (const v of versions) {
        const vrow = document.createElement("tr");
        vrow.className = "version-row";
        vrow.dataset.platform = p.platform;
        vrow.dataset.level = "version";
        vrow.dataset.version = v.pluginVersion === null ? "" : v.pluginVersion;
        const vth = document.createElement("th");
        vth.scope = "row";
        vth.className = "left version";
        vth.textContent = v.pluginVersion === null ? "no version" : `v${v.pluginVersion}`;
        if (v.pluginVersion === null) vth.classList.add("muted");
        vrow.append(vth);
        figureCells(vrow, v);
        body.append(vrow);
      }
    }
  }

  function compareVersions(a, b) {
    if (a === b) return 0;
    if (a === null) return -1;
    if (b === null) return 1;
    const pa = a.split(/[.\-+]/);
    const pb = b.split(/[.\-+]/);
    for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
      const x = pa[i] === undefined ? "" : pa[i];
      const y = pb[i] === undefined ? "" : pb[i];
      const nx = Number(x);
      const ny = Number(y);
      const c = !Number.isNaN(nx) && !Number.isNaN(ny) && x !== "" && y !== "" ? nx - ny : x.localeCompare(y);
      if (c) return c;
    }
    return 0;
  }

  function renderRouteTable() {
    const body = $("tbody", el.tableRoutes);
    body.replaceChildren();
    const routes = state.summary.routes;
    if (!routes.length) emptyRow(body, 7, "No API requests in this window.");
    for (const r of routes) {
      const row = document.createElement("tr");
      row.dataset.method = r.method;
      row.dataset.route = r.route;
      const th = document.createElement("th");
      th.scope = "row";
      th.className = "left route";
      const method = document.createElement("span");
      method.className = `method method-${r.method.toLowerCase()}`;
      method.textContent = r.method;
      const path = document.createElement("code");
      path.textContent = r.route;
      th.append(method, path);
      row.append(th);
      cell(row, fmtInt(r.requests), { col: "requests", value: r.requests });
      cell(row, fmtInt(r.errors), { col: "errors", value: r.errors, className: r.errors ? "" : "zero" });
      const rateCell = cell(row, "", { col: "errorRate", value: r.errorRate, className: "rate-col" });
      const meter = document.createElement("span");
      meter.className = "meter";
      const fill = document.createElement("span");
      fill.className = "meter-fill";
      fill.style.width = `${Math.min(100, (r.errorRate || 0) * 100)}%`;
      if ((r.errorRate || 0) > 0.2) fill.classList.add("bad");
      else if ((r.errorRate || 0) > 0.05) fill.classList.add("warn");
      meter.append(fill);
      const label = document.createElement("span");
      label.textContent = fmtPct(r.errorRate);
      const rate = document.createElement("span");
      rate.className = "rate";
      rate.append(meter, label);
      rateCell.append(rate);
      const codes = cell(row, "", { col: "errorsByCode", className: "left" });
      const top = Object.entries(r.errorsByCode).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
      for (const [code, n] of top.slice(0, 3)) {
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.dataset.code = code;
        chip.dataset.value = String(n);
        chip.textContent = `${code} ${fmtInt(n)}`;
        codes.append(chip);
      }
      if (top.length > 3) {
        const more = document.createElement("span");
        more.className = "muted";
        more.textContent = ` +${top.length - 3} more`;
        more.title = top.slice(3).map(([c, n]) => `${c}: ${n}`).join(", ");
        codes.append(more);
      }
      if (!top.length) codes.textContent = "—";
      cell(row, fmtMs(r.latencyMs.p50), { col: "latencyP50", value: r.latencyMs.p50 });
      cell(row, fmtMs(r.latencyMs.p95), { col: "latencyP95", value: r.latencyMs.p95 });
      body.append(row);
    }
  }

  // ---------------------------------------------------------------- SVG charts
  const SVG_NS = "http://www.w3.org/2000/svg";
  const HEIGHT = 220;
  const MARGIN = { top: 14, right: 14, bottom: 26, left: 52 };

  function svg(name, attrs = {}, parent = null) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    if (parent) parent.append(node);
    return node;
  }

  function niceStep(range, ticks) {
    const raw = range / ticks;
    const power = 10 ** Math.floor(Math.log10(raw));
    const frac = raw / power;
    return (frac <= 1 ? 1 : frac <= 2 ? 2 : frac <= 2.5 ? 2.5 : frac <= 5 ? 5 : 10) * power;
  }

  function yScale(max, { integer = false, fixed = null } = {}) {
    if (fixed !== null) return { max: fixed, step: fixed / 4 };
    if (!max || max <= 0) return { max: integer ? 4 : 1, step: integer ? 1 : 0.25 };
    let step = niceStep(max, 4);
    if (integer) step = Math.max(1, Math.ceil(step));
    return { max: Math.ceil(max / step) * step, step };
  }

  function frame(container, { slots, step, label, scale, format }) {
    container.replaceChildren();
    const width = Math.max(280, Math.floor(container.clientWidth || 600));
    const plotW = width - MARGIN.left - MARGIN.right;
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${HEIGHT}`,
      width,
      height: HEIGHT,
      role: "img",
      "aria-label": label,
      class: "chart-svg",
    }, container);
    const grid = svg("g", { class: "grid" }, root);
    for (let v = 0; v <= scale.max + 1e-9; v += scale.step) {
      const y = MARGIN.top + plotH - (v / scale.max) * plotH;
      svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y, y2: y, class: v === 0 ? "axis" : "" }, grid);
      const t = svg("text", { x: MARGIN.left - 8, y: y + 4, class: "tick", "text-anchor": "end" }, grid);
      t.textContent = format(v);
    }
    const band = plotW / Math.max(1, slots.length);
    const xAxis = svg("g", { class: "x-axis" }, root);
    for (const i of labelIndexes(slots, step, plotW)) {
      const x = MARGIN.left + band * i + band / 2;
      svg("line", { x1: x, x2: x, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 4, class: "axis" }, xAxis);
      const t = svg("text", { x, y: HEIGHT - 6, class: "tick", "text-anchor": "middle" }, xAxis);
      t.textContent = axisLabel(slots[i], step, slots);
    }
    const y = (v) => MARGIN.top + plotH - (Math.min(v, scale.max) / scale.max) * plotH;
    return { root, width, plotW, plotH, band, y, x: (i) => MARGIN.left + band * i };
  }

  function labelIndexes(slots, step, plotW) {
    const n = slots.length;
    if (!n) return [];
    const fits = Math.max(2, Math.floor(plotW / 70));
    if (step === "hour" && n > 48) {
      const midnights = [];
      for (let i = 0; i < n; i++) if (slots[i].getHours() === 0) midnights.push(i);
      if (midnights.length) return thin(midnights, fits);
    }
    const every = Math.max(1, Math.ceil(n / fits));
    const candidates = [];
    for (let i = 0; i < n; i++) {
      const d = slots[i];
      const aligned =
        step === "minute" ? d.getMinutes() % niceMinutes(every) === 0 : step === "hour" ? d.getHours() % niceHours(every) === 0 : true;
      if (aligned) candidates.push(i);
    }
    return thin(candidates.length ? candidates : [...Array(n).keys()], fits);
  }
  const niceMinutes = (every) => [1, 2, 5, 10, 15, 20, 30, 60].find((m) => m >= every) || 60;
  const niceHours = (every) => [1, 2, 3, 4, 6, 12, 24].find((h) => h >= every) || 24;
  function thin(indexes, fits) {
    const every = Math.max(1, Math.ceil(indexes.length / fits));
    return indexes.filter((_, k) => k % every === 0);
  }
  function axisLabel(date, step, slots) {
    if (step === "day") return date.toLocaleDateString(undefined, { day: "numeric", month: "short" });
    if (step === "hour" && slots.length > 48) {
      return date.toLocaleDateString(undefined, { weekday: "short", day: "numeric" });
    }
    return hhmm(date);
  }

  function emptyNote(f, text) {
    const t = svg("text", {
      x: MARGIN.left + f.plotW / 2,
      y: MARGIN.top + f.plotH / 2,
      class: "empty-note",
      "text-anchor": "middle",
    }, f.root);
    t.textContent = text;
  }

  /** Stacked bars: one <g class="series" data-series=…> per series, one <rect class="bar"> per non-zero value. */
  function barChart(container, { slots, step, series, markers, unit, empty, label }) {
    const stackTops = slots.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
    const scale = yScale(Math.max(0, ...stackTops), { integer: true });
    const f = frame(container, { slots, step, label, scale, format: (v) => fmtInt(v) });
    container.dataset.slots = String(slots.length);
    container.dataset.step = step;
    const barW = Math.max(1, Math.min(f.band * 0.78, 42));
    const offset = (f.band - barW) / 2;
    const base = slots.map(() => 0);
    for (const s of series) {
      const total = s.values.reduce((a, b) => a + (b || 0), 0);
      const g = svg("g", { class: "series", "data-series": s.key, "data-total": total, fill: s.color, ...s.attrs },
        f.root);
      s.values.forEach((v, i) => {
        if (!v) return;
        const y0 = f.y(base[i]);
        const y1 = f.y(base[i] + v);
        base[i] += v;
        svg("rect", {
          class: "bar",
          x: (f.x(i) + offset).toFixed(2),
          y: y1.toFixed(2),
          width: barW.toFixed(2),
          height: Math.max(0.5, y0 - y1).toFixed(2),
          "data-series": s.key,
          "data-slot": state.series.slots[i],
          "data-value": v,
          ...s.attrs,
        }, g);
      });
    }
    if (markers) {
      const g = svg("g", { class: "markers", "data-series": markers.key, fill: markers.color }, f.root);
      markers.values.forEach((v, i) => {
        if (!v) return;
        const cx = f.x(i) + f.band / 2;
        const cy = MARGIN.top + 2;
        svg("path", {
          class: "marker",
          d: `M${cx - 5},${cy} L${cx + 5},${cy} L${cx},${cy + 8} Z`,
          "data-series": markers.key,
          "data-slot": state.series.slots[i],
          "data-value": v,
        }, g);
      });
    }
    if (!series.length) emptyNote(f, empty);
    hover(container, f, slots, step, (i) => {
      const rows = series
        .filter((s) => s.values[i])
        .map((s) => ({ color: s.color, name: s.label, value: fmtInt(s.values[i]) }))
        .reverse();
      if (markers && markers.values[i]) rows.push({ color: markers.color, name: markers.label, value: fmtInt(markers.values[i]) });
      const total = series.reduce((sum, s) => sum + (s.values[i] || 0), 0);
      return { rows, footer: `${fmtInt(total)} ${unit}` };
    });
  }

  /** Lines with gaps where a value is null; one <circle class="point"> per value. */
  function lineChart(container, { slots, step, series, yMax = null, format, tooltipFormat, area = false, empty, label }) {
    const values = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
    const scale = yMax !== null ? yScale(0, { fixed: yMax }) : yScale(Math.max(0, ...values));
    const f = frame(container, { slots, step, label, scale, format });
    container.dataset.slots = String(slots.length);
    container.dataset.step = step;
    const cx = (i) => f.x(i) + f.band / 2;
    for (const s of series) {
      const g = svg("g", { class: "series line-series", "data-series": s.key }, f.root);
      const runs = [];
      let run = [];
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          if (run.length) runs.push(run);
          run = [];
        } else run.push([cx(i), f.y(v)]);
      });
      if (run.length) runs.push(run);
      for (const r of runs) {
        const d = r.map(([x, y], k) => `${k ? "L" : "M"}${x.toFixed(2)},${y.toFixed(2)}`).join(" ");
        if (area && r.length > 1) {
          const bottom = f.y(0).toFixed(2);
          svg("path", {
            class: "area",
            d: `${d} L${r[r.length - 1][0].toFixed(2)},${bottom} L${r[0][0].toFixed(2)},${bottom} Z`,
            fill: s.color,
          }, g);
        }
        svg("path", { class: "line", d, stroke: s.color }, g);
      }
      const dense = slots.length > 90;
      const missing = (k) => k < 0 || k >= s.values.length || s.values[k] === null || s.values[k] === undefined;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        const isolated = missing(i - 1) && missing(i + 1); // no line through it: draw it bigger
        svg("circle", {
          class: dense && !isolated ? "point dense" : "point",
          cx: cx(i).toFixed(2),
          cy: f.y(v).toFixed(2),
          r: isolated ? 3.5 : dense ? 1.6 : 2.6,
          fill: s.color,
          "data-series": s.key,
          "data-slot": state.series.slots[i],
          "data-value": v,
        }, g);
      });
    }
    if (!values.length) emptyNote(f, empty);
    hover(container, f, slots, step, (i) => ({
      rows: series.map((s) => ({
        color: s.color,
        name: s.label,
        value: s.values[i] === null || s.values[i] === undefined ? "no data" : tooltipFormat(s.values[i]),
      })),
    }));
  }

  /** One invisible column per slot: hovering (or focusing the chart and using arrow keys) shows a tooltip. */
  function hover(container, f, slots, step, describe) {
    const layer = svg("g", { class: "hover-layer" }, f.root);
    const guide = svg("rect", { class: "guide", y: MARGIN.top, height: f.plotH, width: f.band, x: -1000 }, layer);
    const show = (i, anchorX, anchorY) => {
      guide.setAttribute("x", f.x(i).toFixed(2));
      const { rows, footer } = describe(i);
      const tip = el.tooltip;
      tip.replaceChildren();
      const head = document.createElement("div");
      head.className = "tip-head";
      head.textContent = slotRangeLabel(slots[i], step);
      tip.append(head);
      for (const r of rows) {
        const line = document.createElement("div");
        line.className = "tip-row";
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.backgroundColor = r.color;
        const name = document.createElement("span");
        name.className = "tip-name";
        name.textContent = r.name;
        const value = document.createElement("span");
        value.className = "tip-value";
        value.textContent = r.value;
        line.append(sw, name, value);
        tip.append(line);
      }
      if (!rows.length) {
        const none = document.createElement("div");
        none.className = "tip-row muted";
        none.textContent = "nothing in this slot";
        tip.append(none);
      }
      if (footer) {
        const foot = document.createElement("div");
        foot.className = "tip-foot";
        foot.textContent = footer;
        tip.append(foot);
      }
      tip.hidden = false;
      const box = tip.getBoundingClientRect();
      let left = anchorX + 14;
      if (left + box.width > window.innerWidth - 8) left = anchorX - box.width - 14;
      tip.style.left = `${Math.max(8, left) + window.scrollX}px`;
      tip.style.top = `${Math.max(8, anchorY - box.height / 2) + window.scrollY}px`;
    };
    const hide = () => {
      guide.setAttribute("x", -1000);
      el.tooltip.hidden = true;
    };
    const overlay = svg("rect", {
      class: "overlay",
      x: MARGIN.left,
      y: MARGIN.top,
      width: f.plotW,
      height: f.plotH,
    }, layer);
    const indexAt = (clientX) => {
      const rect = f.root.getBoundingClientRect();
      const x = ((clientX - rect.left) / rect.width) * f.width - MARGIN.left;
      return Math.min(slots.length - 1, Math.max(0, Math.floor(x / f.band)));
    };
    overlay.addEventListener("mousemove", (e) => {
      if (slots.length) show(indexAt(e.clientX), e.clientX, e.clientY);
    });
    overlay.addEventListener("mouseleave", hide);
    // Keyboard: the chart is focusable; arrows move through the slots.
    f.root.setAttribute("tabindex", "0");
    let current = -1;
    f.root.addEventListener("keydown", (e) => {
      if (!slots.length || !["ArrowLeft", "ArrowRight", "Home", "End", "Escape"].includes(e.key)) return;
      e.preventDefault();
      if (e.key === "Escape") {
        hide();
        current = -1;
        return;
      }
      if (e.key === "Home") current = 0;
      else if (e.key === "End") current = slots.length - 1;
      else current = Math.min(slots.length - 1, Math.max(0, current + (e.key === "ArrowRight" ? 1 : -1)));
      const rect = f.root.getBoundingClientRect();
      const x = rect.left + ((f.x(current) + f.band / 2) / f.width) * rect.width;
      show(current, x, rect.top + rect.height / 2);
    });
    f.root.addEventListener("blur", hide);
  }

  function slotRangeLabel(date, step) {
    const end = new Date(date.getTime() + STEP_MS[step]);
    if (step === "day") return dayLabel(date);
    return `${dayLabel(date)} ${hhmm(date)}–${hhmm(end)}`;
  }

  // ---------------------------------------------------------------- wiring
  function init() {
    el.login = $("#login-view");
    el.form = $("#login-form");
    el.email = $("#login-email");
    el.password = $("#login-password");
    el.submit = $("#login-submit");
    el.loginError = $("#login-error");
    el.loginNotice = $("#login-notice");
    el.dashboard = $("#dashboard-view");
    el.dashError = $("#dash-error");
    el.sessionBar = $("#session-bar");
    el.signedInAs = $("#signed-in-as");
    el.signOut = $("#sign-out");
    el.refresh = $("#refresh");
    el.windowSelect = $("#window-select");
    el.windowLabel = $("#window-label");
    el.rendersStatus = $("#renders-status");
    el.chartRenders = $("#chart-renders");
    el.legendRenders = $("#legend-renders");
    el.chartSuccess = $("#chart-success-rate");
    el.chartTime = $("#chart-render-time");
    el.legendTime = $("#legend-render-time");
    el.chartWebhooks = $("#chart-webhooks");
    el.legendWebhooks = $("#legend-webhooks");
    el.webhooksNote = $("#webhooks-note");
    el.tablePlatforms = $("#table-platforms");
    el.tableRoutes = $("#table-routes");
    el.tooltip = $("#tooltip");
    $("#timezone").textContent = timeZoneName();

    el.form.addEventListener("submit", onSubmit);
    el.signOut.addEventListener("click", onSignOut);
    el.refresh.addEventListener("click", () => load());
    el.rendersStatus.addEventListener("change", () => {
      if (state.series) renderRendersChart();
    });
    el.windowSelect.addEventListener("click", (e) => {
      const button = e.target.closest("[data-window]");
      if (button) selectWindow(button.dataset.window);
    });
    el.windowSelect.addEventListener("keydown", (e) => {
      if (!["ArrowLeft", "ArrowRight"].includes(e.key)) return;
      e.preventDefault();
      const keys = Object.keys(WINDOWS);
      const next = keys[(keys.indexOf(state.windowKey) + (e.key === "ArrowRight" ? 1 : keys.length - 1)) % keys.length];
      selectWindow(next);
      el.windowSelect.querySelector(`[data-window="${next}"]`).focus();
    });
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        if (state.summary && !el.dashboard.hidden) render();
      }, 150);
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && state.session && state.timer === null && !el.dashboard.hidden) {
        load();
      }
    });

    for (const button of el.windowSelect.querySelectorAll("[data-window]")) {
      const on = button.dataset.window === state.windowKey;
      button.setAttribute("aria-checked", String(on));
      button.tabIndex = on ? 0 : -1;
    }
    if (state.session) {
      el.login.hidden = true; // a stored session: no flash of the sign-in form while it loads
      load({ firstLoad: true }).catch(async (error) => {
        await forgetSession();
        showLogin({ error: explain(error) });
      });
    } else {
      showLogin();
    }
  }

  document.addEventListener("DOMContentLoaded", init);
})();
