// The security auditor's console: sign in with a bearer token, search the log, open an entry and
// check its inclusion proof here in the browser, watch the verification banner and anomaly flags,
// export a search as CSV. A system administrator signing in sees the connectors' health (the
// system status) and the alarms instead. Data is only ever inserted as text (textContent), never
// as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "xiezhi.auditor.token";
  const NOT_AUDITOR =
    "此控制台仅供安全审计员、系统管理员、部门负责人和检察官使用 · This console is for security auditors, system administrators, department heads and prosecutors.";
  const REQUEST_STATUS = {
    pending_approval: "待审批 · waiting for approval",
    evaluating: "进行中 · running",
    completed: "已完成 · completed",
    rejected: "已驳回 · rejected",
    expired: "已过期 · expired",
    cancelled: "已撤回 · cancelled",
  };
  // What each flag means, in Chinese; the flag's own reason (its figures) follows in English.
  const ANOMALY_EXPLAIN = {
    volume_above_baseline: "该用户当日查询人数明显高于其以往活跃日的中位数，且超过最低阈值。",
    outside_working_hours: "该用户在工作时间以外提出请求、读取结果或审批（北京时间）。",
    denial_burst: "该用户短时间内多次被拒绝，可能在试探权限边界。",
    token_repeated: "同一假名令牌（同一查询对象）被多个请求或多名用户反复查询。",
    fast_approval: "审批在请求提出后极短时间内完成，可能未经实质审查。",
    export: "审计数据被导出：每次导出均提示复核。",
  };
  const APPROVAL_REASONS = {
    cross_region: "跨区域查询 · reaches outside the requester's own region",
    batch_over_limit: "超过批量上限 · more subjects than the requester's batch limit",
    tier3_capability: "涉及三级（高度敏感）数据 · looks up tier-3 (highly sensitive) data",
  };
  const TIERS = { 1: "一级 一般 · tier 1", 2: "二级 敏感 · tier 2", 3: "三级 高度敏感 · tier 3" };
  const STATUS_TEXT = {
    pending: "待审批 · waiting",
    approved: "已批准 · approved",
    rejected: "已驳回 · rejected",
    expired: "已过期 · expired",
    cancelled: "已撤回 · withdrawn",
  };
  const REFUSED = "令牌无效或已过期，请重新登录 · Your token was refused or has expired: sign in again.";
  const FILTERS = ["since", "until", "user", "org", "model", "connector", "decision", "purpose", "kind", "request_id"];
  const ANOMALY_LABELS = {
    volume_above_baseline: "查询量异常 · Volume above baseline",
    outside_working_hours: "非工作时间操作 · Outside working hours",
    denial_burst: "连续被拒 · Burst of denials",
    token_repeated: "重复查询同一对象 · Same subject looked up repeatedly",
    fast_approval: "审批过快 · Fast approval",
    export: "审计数据导出 · Audit export",
  };

  const $ = (id) => document.getElementById(id);
  const state = { nextBefore: null, seqs: [], logKey: null, searches: 0, me: null };

  class SignedOut extends Error {}

  // ---- helpers ---------------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "className") node.className = value;
      else if (name === "title") node.title = value;
      else node.dataset[name] = value;
    }
    for (const child of children) node.append(document.createTextNode(child == null ? "" : String(child)));
    return node;
  }

  function chinaTime(iso) {
    const millis = Date.parse(iso);
    if (Number.isNaN(millis)) return String(iso);
    return new Date(millis + 8 * 3600 * 1000).toISOString().slice(0, 19).replace("T", " ");
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.logKey = null;
    $("app").hidden = true;
    $("system").hidden = true;
    $("approvals").hidden = true;
    $("requester").hidden = true;
    $("banner").hidden = true;
    $("alarm").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-message").textContent = message || "";
  }

  async function problemOf(response) {
    try {
      const body = await response.json();
      return { code: body.code || `http_${response.status}`, detail: body.detail || response.statusText };
    } catch (_) {
      return { code: `http_${response.status}`, detail: response.statusText };
    }
  }

  // Every call carries the token; 401 and 403 end the session with a message saying why.
  async function call(path) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" });
    if (response.status === 401) {
      // A valid token whose roles this system's certificate does not carry is not an auditor's.
      const problem = await problemOf(response);
      signOut(problem.code === "certificate_role_mismatch" ? NOT_AUDITOR : REFUSED);
      throw new SignedOut();
    }
    if (response.status === 403) {
      signOut(NOT_AUDITOR);
      throw new SignedOut();
    }
    return response;
  }

  async function getJson(path) {
    const response = await call(path);
    if (!response.ok) {
      const problem = await problemOf(response);
      const error = new Error(`${problem.code}: ${problem.detail}`);
      error.code = problem.code;
      throw error;
    }
    return response.json();
  }

  function report(node, error) {
    if (error instanceof SignedOut) return;
    node.textContent = error.message;
    node.classList.add("error");
  }

  // ---- sign in ---------------------------------------------------------------------------

  // The roles the token claims, read without verifying it: it only picks which view to show;
  // the gateway checks the token and the roles on every call.
  function claims(value) {
    try {
      const part = value.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="))) || {};
    } catch (_) {
      return {};
    }
  }

  function claimedRoles(value) {
    const roles = claims(value).roles;
    return Array.isArray(roles) ? roles : [];
  }

  function claimedSubject(value) {
    return claims(value).sub || null;
  }

  async function start() {
    const roles = claimedRoles(token());
    state.me = claimedSubject(token());
    if (roles.includes("system_admin") && !roles.includes("security_auditor")) {
      await startSystem();
      return;
    }
    if (roles.includes("dept_head") && !roles.includes("security_auditor")) {
      await startApprovals();
      return;
    }
    if ((roles.includes("prosecutor") || roles.includes("assistant")) && !roles.includes("security_auditor")) {
      await startRequester();
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    $("login-message").textContent = "";
    try {
      state.logKey = await getJson("/v1/audit/log-key");
    } catch (error) {
      if (!(error instanceof SignedOut)) signOut(`无法连接审计接口 · The audit API failed: ${error.message}`);
      return;
    }
    await Promise.all([loadAlarms(), loadBanner(), search(), loadAnomalies(), loadPolicyChanges()]);
  }

  // ---- alarms: a witness refusing the log's checkpoint, until an operator resolves it ------

  async function loadAlarms() {
    const node = $("alarm");
    try {
      const alarms = await getJson("/v1/system/alarms");
      node.hidden = alarms.length === 0;
      node.textContent = alarms
        .map(
          (a) =>
            `告警 · Alarm: ${a.source} — ${a.message} [${a.reason}] · 首次 raised ${chinaTime(a.raised_at)}` +
            (a.repeats > 1 ? ` · ${a.repeats}×, last ${chinaTime(a.last_at)}` : ""),
        )
        .join("\n");
    } catch (error) {
      if (error instanceof SignedOut) return;
      node.hidden = false;
      node.textContent = `无法读取告警 · Alarms could not be read: ${error.message}`;
    }
  }

  // ---- connector health: the system administrator's view ---------------------------------

  async function startSystem() {
    $("login").hidden = true;
    $("system").hidden = false;
    $("logout").hidden = false;
    $("login-message").textContent = "";
    await Promise.all([loadAlarms(), loadSystem()]);
  }

  // An age in whole seconds as days, hours, minutes and seconds, the two largest units shown.
  function ageText(seconds) {
    const units = [
      [86400, "天", "d"],
      [3600, "小时", "h"],
      [60, "分", "min"],
      [1, "秒", "s"],
    ];
    const parts = [];
    let rest = seconds;
    for (const [size, zh, en] of units) {
      const count = Math.floor(rest / size);
      rest -= count * size;
      if (count > 0 || (size === 1 && parts.length === 0)) parts.push([count, zh, en]);
    }
    const shown = parts.slice(0, 2);
    return `${shown.map(([n, zh]) => `${n} ${zh}`).join(" ")} · ${shown.map(([n, , en]) => `${n} ${en}`).join(" ")}`;
  }

  function connectorRow(name, health) {
    const tr = el("tr", { connector: name, reachable: String(health.reachable) });
    if (!health.reachable) tr.classList.add("unreachable");
    const age =
      health.index_age_seconds === null ? "无索引 · no index" : `${ageText(health.index_age_seconds)} (${health.index_age_seconds} s)`;
    const cells = [
      [name, "mono"],
      [health.reachable ? "✓ 可达 · reachable" : "✗ 不可达 · unreachable", health.reachable ? "ok" : "bad"],
      [health.epoch === null ? "—" : health.epoch, "mono"],
      [age, "age"],
      [health.index_activated_at ? chinaTime(health.index_activated_at) : "—", ""],
    ];
    for (const [text, className] of cells) tr.append(el("td", { className }, text));
    return tr;
  }

  async function loadSystem() {
    const status = $("system-status");
    const body = $("connectors").tBodies[0];
    status.classList.remove("error");
    status.textContent = "正在检查数据源… · Checking the connectors…";
    try {
      const system = await getJson("/v1/system/status");
      const names = Object.keys(system.connectors).sort();
      body.replaceChildren(...names.map((name) => connectorRow(name, system.connectors[name])));
      const down = names.filter((name) => !system.connectors[name].reachable);
      status.textContent = down.length
        ? `${down.length} 个数据源不可达 · ${down.length} of ${names.length} connectors unreachable: ${down.join(", ")}`
        : `全部 ${names.length} 个数据源可达 · All ${names.length} connectors reachable`;
      if (down.length) status.classList.add("error");
    } catch (error) {
      report(status, error);
    }
  }

  // ---- the prosecutor's work: requests, quota, models --------------------------------------

  async function startRequester() {
    $("login").hidden = true;
    $("requester").hidden = false;
    $("logout").hidden = false;
    $("login-message").textContent = "";
    await loadRequester();
  }

  async function loadRequester() {
    const message = $("requests-message");
    message.classList.remove("error");
    message.textContent = "读取中… · Loading…";
    try {
      const [me, requests] = await Promise.all([getJson("/v1/me"), getJson("/v1/requests?limit=100")]);
      const quota = $("quota");
      quota.textContent = me.quota
        ? `今日配额 · Quota today: 剩余 ${me.quota.remaining_today} / ${me.quota.subjects_per_day} 人 · ` +
          `${me.quota.remaining_today} of ${me.quota.subjects_per_day} subjects left, resets ${chinaTime(me.quota.resets_at)}`
        : "未授予配额 · No quota granted to your roles.";
      $("requests").tBodies[0].replaceChildren(...requests.map(requestRow));
      $("models").replaceChildren(...me.models.map(modelCard));
      message.textContent = `${requests.length} 个请求 · ${requests.length} requests`;
    } catch (error) {
      report(message, error);
    }
  }

  function requestRow(request) {
    const tr = el("tr", { request: request.request_id, status: request.status });
    const cells = [
      [chinaTime(request.created_at), ""],
      [`${request.model_title} (${request.model})`, ""],
      [request.purpose, ""],
      [REQUEST_STATUS[request.status] || request.status, `status-${request.status}`],
      [`${request.rows_looked_up} / ${request.subject_count}`, "mono"],
      [String(request.clues), "mono clues"],
    ];
    for (const [text, className] of cells) tr.append(el("td", { className }, text));
    const result = el("td", {});
    if (request.result_available) {
      const button = el("button", { className: "secondary small download" }, "下载结果 · Download");
      button.type = "button";
      button.addEventListener("click", () => downloadResult(request.request_id, button));
      result.append(button);
    } else {
      result.textContent = request.status === "completed" ? "已删除 · deleted" : "—";
    }
    tr.append(result);
    return tr;
  }

  function modelCard(model) {
    const card = el("article", { className: "model", model: model.id });
    card.append(el("h4", {}, `${model.title} (${model.id}) · ${model.may_run ? "可运行 · you may run it" : "无权运行 · not for you"}`));
    if (model.description) card.append(el("p", { className: "message" }, model.description));
    const items = document.createElement("ul");
    for (const c of model.looks_up) {
      const item = el("li", { capability: c.id }, `${c.title || c.id} · ${c.tier ? TIERS[c.tier] : "未发布 · not published"}`);
      if (c.tier === 3) item.classList.add("tier3");
      items.append(item);
    }
    card.append(items);
    return card;
  }

  function csvCell(value) {
    let text = value == null ? "" : String(value);
    if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`; // formula text neutralised, as the CLI's report does
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  async function downloadResult(requestId, button) {
    button.disabled = true;
    try {
      const result = await getJson(`/v1/requests/${encodeURIComponent(requestId)}/result`);
      const about = result.about || {};
      const titles = Object.fromEntries((about.capabilities || []).map((c) => [c.id, c.title]));
      const block = [
        ["请求编号", result.request_id],
        ["模型", result.model],
        ["模型名称", about.model_title || ""],
        ["办案用途", about.purpose || ""],
        ["法律依据", about.legal_basis || ""],
        ["发起人", about.requester || ""],
        ["审批人", about.approved_by || "无需审批"],
        ...(about.capabilities || []).map((c) => [`数据截至：${c.title}`, c.data_as_of ? chinaTime(c.data_as_of) : "未知"]),
        ["核对行数", String(result.rows.length)],
        ["线索数", String(result.rows.filter((r) => r.clue).length)],
        ["说明", "序号为名单中有效行的顺序（从 1 起）；“否”表示在该数据中未找到，不表示没有财产。完整报告请用 xiezhi match --request-id 在本机生成。"],
      ];
      const table = [["序号", "线索", ...result.reveals.map((c) => titles[c] || c)]];
      for (const row of result.rows) {
        table.push([row.row + 1, row.clue ? "是" : "否", ...result.reveals.map((c) => (row.flags[c] ? "是" : "否"))]);
      }
      const lines = [...block, [], ...table].map((line) => line.map(csvCell).join(","));
      const blob = new Blob(["\ufeff" + lines.join("\r\n") + "\r\n"], { type: "text/csv;charset=utf-8" });
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `result-${requestId}.csv`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (error) {
      report($("requests-message"), error);
    } finally {
      button.disabled = false;
    }
  }

  // ---- approvals: the department head's queue --------------------------------------------

  async function startApprovals() {
    $("login").hidden = true;
    $("approvals").hidden = false;
    $("logout").hidden = false;
    $("login-message").textContent = "";
    await loadApprovals();
  }

  async function send(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { Authorization: `Bearer ${token()}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
    });
    if (response.status === 401) {
      signOut(REFUSED);
      throw new SignedOut();
    }
    if (!response.ok) {
      const problem = await problemOf(response);
      throw new Error(`${problem.code}: ${problem.detail}`);
    }
    return response.json();
  }

  function field(list, term, value, className = "") {
    list.append(el("dt", {}, term));
    const dd = el("dd", { className }, value);
    list.append(dd);
    return dd;
  }

  function approvalCard(approval) {
    const card = el("article", { className: "approval", request: approval.request_id });
    card.append(el("h3", {}, `${approval.model_title || approval.model} · ${approval.subject_count} 人 · subjects`));
    const list = document.createElement("dl");
    field(list, "请求 · Request", approval.request_id, "mono");
    field(list, "发起人 · Requester", `${approval.requester}（${approval.org}）`);
    field(list, "模型 · Model", `${approval.model_title || ""} (${approval.model})`);
    const looks = field(list, "查询内容 · Looks up", "");
    const items = document.createElement("ul");
    for (const c of approval.capabilities || []) {
      const item = el("li", { capability: c.id }, `${c.title || c.id} · ${c.tier ? TIERS[c.tier] : "—"}`);
      if (c.tier === 3) item.classList.add("tier3");
      items.append(item);
    }
    looks.append(items);
    field(list, "办案用途 · Purpose", approval.purpose);
    field(list, "法律依据 · Legal basis", approval.legal_basis);
    field(list, "人数 · Subjects", String(approval.subject_count));
    field(list, "查询范围 · Scope", approval.scope);
    const why = field(list, "需要审批的原因 · Why it needs approval", "");
    const reasons = document.createElement("ul");
    for (const code of approval.reasons) reasons.append(el("li", { reason: code }, APPROVAL_REASONS[code] || code));
    why.append(reasons);
    field(list, "名单 SHA-256 · List digest", approval.subjects_digest || "（未提供 · not given）", "mono digest");
    field(list, "提出 · Requested", chinaTime(approval.requested_at));
    field(list, "截止 · Expires", chinaTime(approval.expires_at));
    field(list, "状态 · Status", STATUS_TEXT[approval.status] || approval.status, `status-${approval.status}`);
    if (approval.decided_by) {
      field(list, "决定人 · Decided by", approval.decided_by);
      field(list, "决定时间 · Decided at", chinaTime(approval.decided_at));
      field(list, "理由 · Reason", approval.decision_reason || "");
    }
    card.append(list);
    if (approval.status === "pending") card.append(decisionForm(approval));
    return card;
  }

  function decisionForm(approval) {
    const form = el("form", { className: "decision" });
    const label = el("label", {}, "理由（必填，勿填写证件号码）· Reason (required; no ID numbers)");
    const reason = document.createElement("textarea");
    reason.rows = 2;
    reason.required = true;
    reason.maxLength = 500;
    reason.className = "reason";
    label.append(reason);
    const approve = el("button", { className: "approve" }, "批准 · Approve");
    approve.type = "button";
    const reject = el("button", { className: "reject secondary" }, "驳回 · Reject");
    reject.type = "button";
    const message = el("p", { className: "message" });
    message.setAttribute("role", "status");
    const decide = async (action) => {
      if (!reason.value.trim()) {
        message.textContent = "请填写理由 · Give a reason.";
        message.classList.add("error");
        return;
      }
      approve.disabled = reject.disabled = true;
      try {
        await send(`/v1/approvals/${encodeURIComponent(approval.request_id)}/${action}`, { reason: reason.value.trim() });
        await loadApprovals(action === "approve" ? "已批准 · Approved." : "已驳回 · Rejected.");
      } catch (error) {
        approve.disabled = reject.disabled = false;
        report(message, error);
      }
    };
    approve.addEventListener("click", () => decide("approve"));
    reject.addEventListener("click", () => decide("reject"));
    const actions = el("div", { className: "actions" });
    actions.append(approve, reject, message);
    form.append(label, actions);
    return form;
  }

  async function loadApprovals(done = "") {
    const message = $("approvals-message");
    const status = $("approvals-status").value;
    message.classList.remove("error");
    message.textContent = "读取中… · Loading…";
    try {
      const approvals = await getJson(`/v1/approvals?status=${encodeURIComponent(status)}`);
      $("approval-list").replaceChildren(...approvals.map(approvalCard));
      const count = `${approvals.length} 项 · ${approvals.length} ${STATUS_TEXT[status] || status}`;
      message.textContent = done ? `${done} ${count}` : count;
    } catch (error) {
      report(message, error);
    }
  }

  // ---- verification banner ---------------------------------------------------------------

  async function loadBanner() {
    const banner = $("banner");
    banner.hidden = false;
    banner.className = "banner pending";
    banner.textContent = "正在校验审计日志… · Verifying the audit log…";
    try {
      const result = await getJson("/v1/audit/verification");
      if (result.ok) {
        const cosigned = Object.entries(result.cosigned || {}).map(([name, n]) => `${name} (${n})`).join(", ");
        banner.className = "banner ok";
        banner.textContent =
          `审计日志完整 · Log verified: ${result.entries} entries, ${result.checkpoints} signed checkpoints` +
          (cosigned ? `, cosigned by ${cosigned}` : ", no witness cosignatures yet");
      } else {
        const first = result.problems.find((p) => p.position === result.first_bad_position) || result.problems[0];
        banner.className = "banner bad";
        banner.textContent =
          result.first_bad_position !== null && result.first_bad_position !== undefined
            ? `检测到篡改 · Tampering detected at entry ${result.first_bad_position}: ${first ? first.message : ""}`
            : `校验失败 · Verification failed: ${first ? `${first.code}: ${first.message}` : "unknown problem"}`;
      }
    } catch (error) {
      if (error instanceof SignedOut) return;
      banner.className = "banner bad";
      banner.textContent = `无法校验 · Verification could not run: ${error.message}`;
    }
  }

  // ---- search ----------------------------------------------------------------------------

  function filterParams() {
    const params = new URLSearchParams();
    const form = $("search");
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    if (state.seqs.length) params.set("seqs", state.seqs.join(","));
    return params;
  }

  function row(entry) {
    const tr = el("tr", { seq: entry.seq });
    if (isOwnRead(entry)) tr.classList.add("own");
    if (state.seqs.includes(entry.seq)) tr.classList.add("flagged");
    const cells = [
      [entry.seq, "mono"],
      [chinaTime(entry.at), ""],
      [entry.kind, ""],
      [entry.actor, ""],
      [entry.org || "", ""],
      [entry.action, ""],
      [entry.outcome, `outcome-${entry.outcome}`],
      [entry.model || "", ""],
      [entry.connector || "", ""],
      [entry.purpose || "", ""],
      [entry.request_id ? entry.request_id.slice(0, 8) : "", "mono"],
    ];
    for (const [text, className] of cells) tr.append(el("td", { className }, text));
    if (entry.request_id) {
      // One click on the request id shows the request's whole story: who asked and why, the
      // decision, the approval, every relay and lookup, every read of its result.
      const cell = tr.lastChild;
      cell.title = `${entry.request_id} — 显示此请求的全部条目 · show this request's whole story`;
      cell.classList.add("story");
      cell.addEventListener("click", (event) => {
        event.stopPropagation();
        showStory(entry.request_id);
      });
    }
    tr.addEventListener("click", () => openEntry(entry.seq));
    return tr;
  }

  function showStory(requestId) {
    const form = $("search");
    for (const name of FILTERS) form.elements[name].value = "";
    state.seqs = [];
    showSeqFilter();
    form.elements.request_id.value = requestId;
    $("show-own").checked = false;
    search();
  }

  async function search(more = false) {
    const status = $("search-status");
    const body = $("results").tBodies[0];
    status.classList.remove("error");
    status.textContent = "检索中… · Searching…";
    const params = filterParams();
    if (more && state.nextBefore !== null) params.set("before", state.nextBefore);
    // Only the latest search may fill the table: an earlier one answering late is dropped.
    const ticket = ++state.searches;
    try {
      const page = await getJson(`/v1/audit/entries?${params}`);
      if (ticket !== state.searches) return;
      if (!more) body.replaceChildren();
      for (const entry of page.entries) body.append(row(entry));
      state.nextBefore = page.next_before;
      $("more").hidden = page.next_before === null;
      foldOwnReads();
      const folded = body.querySelectorAll("tr.own").length;
      const shown = body.rows.length - ($("show-own").checked ? 0 : folded);
      $("empty").hidden = shown > 0;
      status.textContent =
        `${shown} 条 · ${shown} entries shown` +
        (folded && !$("show-own").checked ? `（另有您自己的查阅 ${folded} 条已折叠 · ${folded} of your own reads folded）` : "");
    } catch (error) {
      if (ticket === state.searches) report(status, error);
    }
  }

  // The auditor's own reads (each search is itself a logged decision) are folded away by
  // default, so the entries under review are not buried under the review's own trail.
  function isOwnRead(entry) {
    return entry.actor === state.me && (entry.kind === "decision" || entry.kind.startsWith("audit."));
  }

  function foldOwnReads() {
    const show = $("show-own").checked;
    for (const tr of $("results").tBodies[0].rows) {
      if (tr.classList.contains("own")) tr.hidden = !show;
    }
  }

  // ---- policy changes: who changed the rules, when, to which version ------------------------

  async function loadPolicyChanges() {
    const status = $("policy-status");
    const list = $("policy-changes");
    try {
      const page = await getJson("/v1/audit/policy-changes?limit=20");
      list.replaceChildren(
        ...page.entries.map((entry) => {
          const d = entry.detail || {};
          const version = d.policy_version || d.version || "";
          const item = el(
            "li",
            { seq: entry.seq },
            `${chinaTime(entry.at)} · ${entry.actor} · ${entry.action} · ${entry.outcome}` + (version ? ` · ${version}` : ""),
          );
          item.title = "打开条目 · Open the entry";
          item.addEventListener("click", () => openEntry(entry.seq));
          return item;
        }),
      );
      status.textContent = page.entries.length ? "" : "没有策略变更 · No policy changes.";
    } catch (error) {
      report(status, error);
    }
  }

  function showSeqFilter() {
    $("seq-filter").hidden = state.seqs.length === 0;
    $("seq-filter-text").textContent = `仅显示提示涉及的 ${state.seqs.length} 条 · Only the ${state.seqs.length} flagged entries`;
  }

  // ---- export ----------------------------------------------------------------------------

  async function exportCsv() {
    const status = $("search-status");
    status.classList.remove("error");
    status.textContent = "导出中… · Exporting…";
    try {
      const response = await call(`/v1/audit/entries.csv?${filterParams()}`);
      if (!response.ok) {
        const problem = await problemOf(response);
        throw new Error(`${problem.code}: ${problem.detail}`);
      }
      const blob = await response.blob();
      const link = el("a");
      link.href = URL.createObjectURL(blob);
      link.download = "audit-entries.csv";
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
      const rows = response.headers.get("X-Export-Rows");
      status.textContent = `已导出 ${rows} 条（导出本身已记入日志）· Exported ${rows} entries (the export is itself logged)`;
    } catch (error) {
      report(status, error);
    }
  }

  // ---- entry detail and its proof --------------------------------------------------------

  async function openEntry(seq) {
    const section = $("detail");
    const proof = $("proof");
    section.hidden = false;
    section.dataset.seq = seq;
    $("detail-title").textContent = `条目 · Entry ${seq}`;
    $("detail-entry").textContent = "";
    proof.className = "proof pending";
    proof.textContent = "正在校验包含证明… · Checking the inclusion proof…";
    section.scrollIntoView({ block: "nearest" });
    let detail;
    try {
      detail = await getJson(`/v1/audit/entries/${seq}`);
    } catch (error) {
      if (!(error instanceof SignedOut)) {
        proof.className = "proof bad";
        proof.textContent = `无法读取条目 · Cannot read the entry: ${error.message}`;
      }
      return;
    }
    try {
      $("detail-entry").textContent = JSON.stringify(JSON.parse(detail.entry), null, 2);
    } catch (_) {
      $("detail-entry").textContent = detail.entry;
    }
    showFields(detail);
    await checkProof(seq, detail);
  }

  // The entry's fields as a person reads them: labelled, times in China time, the detail's
  // keys one per line. The canonical JSON stays below, folded, as the proof hashes it.
  const ENTRY_FIELDS = [
    ["seq", "序号 · Seq"],
    ["at", "时间 · Time (UTC+8)"],
    ["kind", "类型 · Kind"],
    ["actor", "用户 · User"],
    ["org", "单位 · Organisation"],
    ["action", "动作 · Action"],
    ["outcome", "结果 · Outcome"],
    ["purpose", "案号 · Purpose"],
    ["model", "模型 · Model"],
    ["connector", "数据源 · Connector"],
    ["request_id", "请求 · Request"],
  ];

  function showFields(detail) {
    const list = $("detail-fields");
    list.replaceChildren();
    for (const [name, label] of ENTRY_FIELDS) {
      const value = detail[name];
      if (value === null || value === undefined || value === "") continue;
      list.append(el("dt", {}, label), el("dd", { field: name }, name === "at" ? chinaTime(value) : value));
    }
    for (const [key, value] of Object.entries(detail.detail || {})) {
      const shown = typeof value === "object" && value !== null ? JSON.stringify(value) : value;
      list.append(el("dt", { className: "detail-key" }, key), el("dd", { field: `detail.${key}` }, shown));
    }
  }

  async function checkProof(seq, detail) {
    const proof = $("proof");
    let answer;
    try {
      answer = await call(`/v1/audit/proofs/inclusion?seq=${seq}`);
    } catch (_) {
      return; // signed out
    }
    if (!answer.ok) {
      const problem = await problemOf(answer);
      if (problem.code === "not_yet_checkpointed") {
        proof.className = "proof pending";
        proof.textContent = "尚未纳入签名检查点 · Not yet in a signed checkpoint: check again shortly.";
      } else {
        proof.className = "proof bad";
        proof.textContent = `无法取得包含证明 · No inclusion proof: ${problem.code}: ${problem.detail}`;
      }
      return;
    }
    try {
      const result = await XiezhiProof.verifyInclusion(detail.entry, detail.leaf_hash, await answer.json(), state.logKey);
      const cosigned = result.cosignedBy.length ? result.cosignedBy.join(", ") : "no witness yet";
      proof.className = "proof ok";
      proof.textContent =
        `✓ 包含证明已验证 · Inclusion proof verified against checkpoint ${result.size} ` +
        `(signed by ${result.signedBy}, cosigned by ${cosigned})`;
    } catch (error) {
      proof.className = "proof bad";
      proof.textContent = `✗ 包含证明验证失败 · Inclusion proof FAILED: ${error.message}`;
    }
  }

  // ---- anomalies -------------------------------------------------------------------------

  async function loadAnomalies() {
    const list = $("anomalies");
    const status = $("anomalies-status");
    status.classList.remove("error");
    status.textContent = "加载中… · Loading…";
    try {
      const flags = await getJson("/v1/audit/anomalies");
      list.replaceChildren();
      for (const flag of flags) {
        const item = el("li", { code: flag.code });
        item.append(
          el("div", { className: "code" }, ANOMALY_LABELS[flag.code] || flag.code),
          el("div", { className: "explain" }, ANOMALY_EXPLAIN[flag.code] || ""),
          el("div", { className: "who" }, `${flag.actor}${flag.org ? ` · ${flag.org}` : ""} · ${chinaTime(flag.at)}`),
          el("div", { className: "reason" }, flag.reason),
          triageLine(flag),
          triageForm(flag),
        );
        item.addEventListener("click", () => focusFlag(flag));
        list.append(item);
      }
      status.textContent = flags.length ? `${flags.length} 条提示 · ${flags.length} flags` : "无异常 · No flags";
    } catch (error) {
      report(status, error);
    }
  }

  const TRIAGE = {
    acknowledged: "已确认 · acknowledged",
    escalated: "已上报 · escalated",
    dismissed: "已排除 · dismissed",
  };

  function triageLine(flag) {
    const t = flag.triage;
    const text = t
      ? `${TRIAGE[t.state] || t.state} · ${t.by} · ${chinaTime(t.at)} · ${t.note}`
      : "未处理 · not triaged";
    return el("div", { className: `triage ${t ? `triage-${t.state}` : "triage-open"}` }, text);
  }

  // Acknowledge, escalate or dismiss a flag with a note; the gateway audits it.
  function triageForm(flag) {
    const form = el("div", { className: "triage-form" });
    form.addEventListener("click", (event) => event.stopPropagation());
    const choice = document.createElement("select");
    for (const [value, text] of Object.entries(TRIAGE)) {
      const option = el("option", {}, text);
      option.value = value;
      choice.append(option);
    }
    const note = document.createElement("input");
    note.placeholder = "说明（勿填写证件号码）· note (no ID numbers)";
    note.maxLength = 500;
    const save = el("button", { className: "secondary small" }, "记录 · Record");
    save.type = "button";
    const message = el("span", { className: "message" });
    save.addEventListener("click", async () => {
      if (note.value.trim().length < 2) {
        message.textContent = "请填写说明 · Add a note.";
        return;
      }
      save.disabled = true;
      try {
        await send(`/v1/audit/anomalies/${flag.key}/triage`, { state: choice.value, note: note.value.trim() });
        await loadAnomalies();
      } catch (error) {
        save.disabled = false;
        report(message, error);
      }
    });
    form.append(choice, note, save, message);
    return form;
  }

  function focusFlag(flag) {
    const form = $("search");
    for (const name of FILTERS) form.elements[name].value = "";
    state.seqs = flag.seqs.slice();
    if (!state.seqs.length) form.elements.user.value = flag.actor;
    showSeqFilter();
    search();
  }

  // ---- wiring ----------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim().replace(/^Bearer\s+/i, "");
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      start();
    });
    $("logout").addEventListener("click", () => signOut(""));
    $("search").addEventListener("submit", (event) => {
      event.preventDefault();
      search();
    });
    $("clear-button").addEventListener("click", () => {
      $("search").reset();
      state.seqs = [];
      showSeqFilter();
      search();
    });
    $("seq-filter-clear").addEventListener("click", () => {
      state.seqs = [];
      showSeqFilter();
      search();
    });
    $("export-button").addEventListener("click", exportCsv);
    $("more").addEventListener("click", () => search(true));
    $("show-own").addEventListener("change", () => search());
    $("anomalies-refresh").addEventListener("click", loadAnomalies);
    $("system-refresh").addEventListener("click", loadSystem);
    $("approvals-refresh").addEventListener("click", () => loadApprovals());
    $("requester-refresh").addEventListener("click", () => loadRequester());
    $("approvals-status").addEventListener("change", () => loadApprovals());
    $("detail-close").addEventListener("click", () => {
      $("detail").hidden = true;
    });
    if (token()) start();
  });
})();
