// agentq console: a no-build client. Every page is fed by the public API under /api/v1,
// with the API key from sessionStorage sent as `Authorization: Bearer`. The DOM is built
// with createElement and text nodes only, so no API value is ever parsed as markup.

const KEY = "agentq.console.key";
const SELF = "agentq.console.self";
const API = "/api/v1";
const ORIGIN = location.origin;
const FINAL = ["succeeded", "failed", "cancelled", "timed_out"];
const SCOPES = ["all", "agents:read", "agents:write", "runs:read", "connections:read", "usage:read",
  "signals:write", "notifications:read", "notifications:write", "webhooks:read", "webhooks:write",
  "mcp:read", "mcp:write", "credentials:read", "credentials:write", "audit_logs:read", "mcp:tools",
  "keys:read", "keys:write", "request_logs:read"];
const LIFETIMES = [["never", "Permanent"], ["1y", "1 year"], ["90d", "90 days"], ["30d", "30 days"], ["7d", "1 week"]];

// ---- DOM helpers ---------------------------------------------------------------------------

function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = true;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, kids);
  return el;
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const k of kids) el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return el;
}

let uid = 0;
const nextId = (p) => `${p}-${++uid}`;

function field(label, input, hint) {
  const id = input.id || nextId("f");
  input.id = id;
  const hintEl = hint ? h("div", { class: "muted", id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", {}, h("label", { for: id }, label), input, hintEl);
}

function table(headers, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing here yet.");
  return h("div", { class: "table-wrap" },
    h("table", { class: "stack" },
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c, i) => h("td", { "data-label": headers[i] || null }, c)))))));
}

const when = (t) => (t ? new Date(t).toLocaleString() : "—");
const statusTag = (s) => h("span", { class: `status status-${s}` }, String(s).replace("_", " "));
const pretty = (v) => JSON.stringify(v, null, 2);
const short = (id) => String(id).slice(-8);

function say(text) {
  const live = document.getElementById("live");
  live.textContent = "";
  setTimeout(() => { live.textContent = text; }, 50);
}

function copyButton(text, label) {
  const b = h("button", { type: "button", class: "secondary", "aria-label": label || "Copy" }, "Copy");
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = "Copied";
      say("Copied to the clipboard");
    } catch {
      b.textContent = "Select and copy";
    }
    setTimeout(() => { b.textContent = "Copy"; }, 2000);
  });
  return b;
}

function copyLine(label, text) {
  return h("div", {}, h("div", { class: "muted" }, label),
    h("div", { class: "copy" }, h("code", {}, text), copyButton(text, `Copy ${label}`)));
}

function alertBox(kind, ...kids) {
  return h("div", { class: `alert ${kind}`, role: kind === "error" ? "alert" : "status" }, ...kids);
}

// ---- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

const key = () => sessionStorage.getItem(KEY);

function headers(extra) {
  return { Authorization: `Bearer ${key()}`, Accept: "application/json", ...extra };
}

async function api(method, path, body) {
  const init = { method, headers: headers(), cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, init);
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text }; }
  }
  if (!r.ok) {
    if (r.status === 401 && key()) signOut(data && data.message);
    throw new ApiError(r.status, data);
  }
  return data;
}

const get = (path) => api("GET", path);
const post = (path, body) => api("POST", path, body);
const qs = (o) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v !== "" && v !== null && v !== undefined) p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
};

// Server-sent events over fetch (EventSource cannot send the key in a header).
async function sse(path, { method = "GET", body, signal, lastId, onEvent }) {
  const hs = headers({ Accept: "text/event-stream" });
  if (body !== undefined) hs["Content-Type"] = "application/json";
  if (lastId) hs["Last-Event-ID"] = lastId;
  const r = await fetch(API + path, {
    method, headers: hs, signal, cache: "no-store", credentials: "omit",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    let data = null;
    try { data = await r.json(); } catch { /* not JSON */ }
    throw new ApiError(r.status, data);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buf = (buf + value).replace(/\r\n?/g, "\n");
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, at);
      buf = buf.slice(at + 2);
      let event = "message", id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const c = line.indexOf(":");
        const name = c < 0 ? line : line.slice(0, c);
        let v = c < 0 ? "" : line.slice(c + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (name === "event") event = v;
        else if (name === "data") data.push(v);
        else if (name === "id") id = v;
      }
      if (data.length) onEvent(event, data.join("\n"), id);
    }
  }
}

// Every page's data, listed with its cursor, up to `max` items.
async function all(path, max = 200) {
  const out = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${sep}limit=${Math.min(200, max)}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    out.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && out.length < max);
  return out;
}

// ---- session -------------------------------------------------------------------------------

function self() {
  try { return JSON.parse(sessionStorage.getItem(SELF) || "null"); } catch { return null; }
}

function signOut(reason) {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(SELF);
  stopBadge();
  render(reason);
}

async function signIn(secret) {
  sessionStorage.setItem(KEY, secret);
  // Any authenticated route answers 401 for a bad key; 403 means a good key without keys:read.
  const prefix = secret.slice(0, 11);
  let me = { prefix, scopes: null, agent_ids: null, name: null };
  try {
    const keys = await all("/api-keys", 1000);
    const found = keys.find((k) => k.prefix === prefix && !k.revoked_at);
    if (found) me = { prefix, scopes: found.scopes, agent_ids: found.agent_ids, name: found.name };
  } catch (e) {
    if (e.status === 401 || !(e instanceof ApiError)) {
      sessionStorage.removeItem(KEY);
      throw e;
    }
  }
  sessionStorage.setItem(SELF, JSON.stringify(me));
}

const hasScope = (s) => {
  const me = self();
  return !me || !me.scopes || me.scopes.includes("all") || me.scopes.includes(s);
};

// ---- layout --------------------------------------------------------------------------------

const NAV = [
  ["#/agents", "Agents"], ["#/keys", "API keys"], ["#/runs", "Runs"], ["#/approvals", "Approvals"],
  ["#/webhooks", "Webhooks"], ["#/hooks", "Inbound hooks"], ["#/logs", "Request logs"],
  ["#/usage", "Usage"], ["#/audit", "Audit log"], ["#/notifications", "Notifications"],
];

function drawChrome() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  nav.replaceChildren();
  who.replaceChildren();
  if (!key()) return;
  const here = location.hash.split("?")[0];
  nav.append(h("ul", {}, NAV.map(([href, label]) => h("li", {},
    h("a", { href, "aria-current": here.startsWith(href) ? "page" : null },
      label, href === "#/notifications" ? h("span", { id: "unread", class: "badge", hidden: true }) : null)))));
  const me = self();
  who.append(
    h("span", {}, "Signed in with ", h("code", {}, `${me ? me.prefix : "aq_…"}…`),
      me && me.scopes ? ` (${me.scopes.join(", ")}${me.agent_ids && me.agent_ids.length ? `; ${me.agent_ids.length} agent(s)` : ""})` : ""),
    h("button", { type: "button", class: "secondary", onclick: () => signOut() }, "Sign out"));
  refreshBadge();
}

let badgeTimer = null;
function stopBadge() {
  clearInterval(badgeTimer);
  badgeTimer = null;
}
async function refreshBadge() {
  if (!hasScope("notifications:read")) return;
  try {
    const page = await get("/notifications?unread=true&limit=200");
    const el = document.getElementById("unread");
    if (!el) return;
    const n = page.data.length;
    el.hidden = n === 0;
    el.textContent = page.next_cursor ? `${n}+` : String(n);
    el.setAttribute("aria-label", `${el.textContent} unread`);
  } catch {
    stopBadge();
  }
  if (!badgeTimer && key()) badgeTimer = setInterval(refreshBadge, 15000);
}

// ---- router --------------------------------------------------------------------------------

let current = { abort: new AbortController(), gen: 0 };

const ROUTES = [
  [/^#\/agents$/, agentsPage],
  [/^#\/agents\/([0-9a-f-]{36})(?:\/(chat|runs|api))?$/, agentPage],
  [/^#\/keys$/, keysPage],
  [/^#\/runs$/, runsPage],
  [/^#\/runs\/([0-9a-f-]{36})$/, runPage],
  [/^#\/approvals$/, approvalsPage],
  [/^#\/webhooks$/, webhooksPage],
  [/^#\/webhooks\/([0-9a-f-]{36})$/, webhookPage],
  [/^#\/hooks$/, hooksPage],
  [/^#\/logs$/, logsPage],
  [/^#\/usage$/, usagePage],
  [/^#\/audit$/, auditPage],
  [/^#\/notifications$/, notificationsPage],
];

function query() {
  const i = location.hash.indexOf("?");
  return new URLSearchParams(i < 0 ? "" : location.hash.slice(i + 1));
}

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

async function render(notice) {
  current.abort.abort();
  current = { abort: new AbortController(), gen: current.gen + 1 };
  const ctx = current;
  const main = document.getElementById("main");
  drawChrome();
  if (!key()) {
    main.replaceChildren(signInPage(notice));
    document.title = "Sign in · agentq console";
    return;
  }
  const path = location.hash.split("?")[0];
  const route = ROUTES.find(([re]) => re.test(path));
  if (!route) {
    location.replace("#/agents");
    return;
  }
  const page = h("div", {});
  main.replaceChildren(page);
  try {
    await route[1](page, ctx, ...path.match(route[0]).slice(1));
  } catch (e) {
    if (ctx !== current) return;
    page.append(problem(e));
  }
  const heading = page.querySelector("h1");
  document.title = `${heading ? heading.textContent : "agentq"} · agentq console`;
}

// What a failed request means for the person reading.
function problem(e) {
  if (e instanceof ApiError && e.status === 403) {
    return alertBox("", h("strong", {}, "Out of scope for this API key. "), e.message,
      " Sign in with a key that has this scope to see it.");
  }
  if (e instanceof ApiError && e.status === 404) {
    return alertBox("error", h("strong", {}, "Not found. "), "It does not exist, or this API key cannot see it.");
  }
  if (e && e.name === "AbortError") return "";
  return alertBox("error", h("strong", {}, "Something went wrong. "), e instanceof ApiError ? e.message : String(e));
}

// Runs an action from a button, showing its outcome in `out`.
async function act(button, out, fn) {
  button.disabled = true;
  out.replaceChildren();
  try {
    await fn();
  } catch (e) {
    out.replaceChildren(problem(e));
  } finally {
    button.disabled = false;
  }
}

// Runs a page section that may be out of the key's scope: its failure stays in the section.
async function section(el, fn) {
  try {
    await fn();
  } catch (e) {
    el.append(problem(e));
  }
}

// ---- sign in -------------------------------------------------------------------------------

function signInPage(notice) {
  const input = h("input", { type: "password", name: "api-key", autocomplete: "off", required: true, spellcheck: "false", placeholder: "aq_…" });
  const out = h("div", {});
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to the agentq console"),
    notice ? alertBox("error", notice) : null,
    field("API key", input, "Your key stays in this browser tab only (session storage) and is sent to this server alone."),
    h("p", {}, button), out);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(button, out, async () => {
      await signIn(input.value.trim());
      say("Signed in");
      if (!location.hash || location.hash === "#/" || location.hash === "#") location.hash = "#/agents";
      else render();
    });
  });
  setTimeout(() => input.focus(), 0);
  return form;
}

// ---- agents --------------------------------------------------------------------------------

const TEMPLATES = {
  scripted: { steps: [{ reply: "You said: {{input}}" }] },
  http: { url: "", timeout_seconds: 30 },
  llm: { base_url: "", model: "", system_prompt: "You are a helpful assistant." },
};

async function agentsPage(page, ctx) {
  page.append(h("h1", {}, "Agents"));
  const list = h("div", { class: "card" });
  page.append(list);
  const agents = await all("/agents", 500);
  if (ctx !== current) return;
  list.append(table(["Name", "Runtime", "Status", "Created", ""], agents.map((a) => [
    h("a", { href: `#/agents/${a.id}` }, a.name), a.runtime, statusTag(a.status), when(a.created_at), pauseButton(a),
  ]), "No agents yet: create one below."));
  if (hasScope("agents:write") && !(self()?.agent_ids || []).length) page.append(createAgentForm());
}

function pauseButton(a) {
  const paused = a.status === "paused";
  const b = h("button", { type: "button", class: "secondary", "aria-label": `${paused ? "Resume" : "Pause"} ${a.name}` }, paused ? "Resume" : "Pause");
  const out = h("span", {});
  b.addEventListener("click", () => act(b, out, async () => {
    await post(`/agents/${a.id}/${paused ? "resume" : "pause"}`);
    say(`${a.name} ${paused ? "resumed" : "paused"}`);
    render();
  }));
  return h("span", {}, b, out);
}

function createAgentForm() {
  const name = h("input", { type: "text", required: true, maxlength: 200 });
  const description = h("input", { type: "text", maxlength: 2000 });
  const runtime = h("select", {}, ["scripted", "http", "llm"].map((r) => h("option", { value: r }, r)));
  const config = h("textarea", { rows: 8, spellcheck: "false" });
  const approval = h("textarea", { rows: 3, spellcheck: "false", placeholder: '{"tools": ["send_email"], "timeout_seconds": 3600}' });
  config.value = pretty(TEMPLATES.scripted);
  runtime.addEventListener("change", () => { config.value = pretty(TEMPLATES[runtime.value]); });
  const out = h("div", {});
  const button = h("button", { type: "submit" }, "Create agent");
  const form = h("form", { class: "card", "aria-labelledby": "new-agent" },
    h("h2", { id: "new-agent" }, "New agent"),
    field("Name", name), field("Description", description), field("Runtime", runtime,
      "scripted: steps from the config (demos, tests); http: agentq POSTs each run to your URL; llm: an OpenAI-compatible model."),
    field("Config (JSON)", config), field("Approval policy (JSON, optional)", approval, "Which tool calls wait for a person."),
    h("p", {}, button), out);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(button, out, async () => {
      const body = { name: name.value, runtime: runtime.value };
      if (description.value.trim()) body.description = description.value;
      try {
        body.config = JSON.parse(config.value);
        if (approval.value.trim()) body.approval = JSON.parse(approval.value);
      } catch (e) {
        throw new ApiError(400, { message: `The JSON is not valid: ${e.message}` });
      }
      const agent = await post("/agents", body);
      say(`Agent ${agent.name} created`);
      go(`#/agents/${agent.id}`);
    });
  });
  return form;
}

// The agent's URLs: from its `endpoints` object when the API gives one, else built here.
function endpoints(agent) {
  const given = agent.endpoints && typeof agent.endpoints === "object" ? agent.endpoints : {};
  const abs = (u) => (typeof u === "string" && u.startsWith("/") ? ORIGIN + u : u);
  const pick = (names, fallback) => abs(names.map((n) => given[n]).find((v) => typeof v === "string") || fallback);
  return {
    chat: pick(["chat"], `${ORIGIN}${API}/agents/${agent.id}/chat`),
    chatStream: pick(["chat_stream", "chatStream"], `${ORIGIN}${API}/agents/${agent.id}/chat/stream`),
    mcpHttp: pick(["mcp_stream_http", "mcp_streamable_http", "mcp", "stream_http"], `${ORIGIN}/api/mcp/agents/${agent.id}/stream-http`),
    mcpSse: pick(["mcp_sse", "sse"], `${ORIGIN}/api/mcp/agents/${agent.id}/sse`),
  };
}

async function agentPage(page, ctx, id, tab) {
  const agent = await get(`/agents/${id}`);
  if (ctx !== current) return;
  const base = `#/agents/${id}`;
  const tabs = [[base, "Overview"], [`${base}/chat`, "Chat"], [`${base}/runs`, "Runs"], [`${base}/api`, "API"]];
  const here = tab ? `${base}/${tab}` : base;
  page.append(
    h("p", {}, h("a", { href: "#/agents" }, "← Agents")),
    h("h1", {}, agent.name, " ", statusTag(agent.status)),
    h("nav", { class: "tabs", "aria-label": "Agent" }, tabs.map(([href, label]) =>
      h("a", { href, "aria-current": href === here ? "page" : null }, label))));
  const body = h("div", {});
  page.append(body);
  if (!tab) agentOverview(body, agent);
  else if (tab === "chat") agentChat(body, agent, ctx);
  else if (tab === "runs") await runsList(body, ctx, [agent], { agent: agent.id });
  else await agentApi(body, agent, ctx);
}

function agentOverview(body, agent) {
  body.append(h("div", { class: "card" },
    h("dl", { class: "grid" },
      [["Runtime", agent.runtime], ["Status", statusTag(agent.status)], ["Created", when(agent.created_at)],
        ["Schedule", agent.schedule ? `${agent.schedule} (${agent.timezone})` : "none"],
        ["Max concurrent runs", agent.limits?.max_concurrent_runs], ["Max run seconds", agent.limits?.max_run_seconds]]
        .map(([k, v]) => h("div", {}, h("dt", { class: "muted" }, k), h("dd", {}, v)))),
    agent.description ? h("p", {}, agent.description) : null,
    hasScope("agents:write") ? pauseButton(agent) : null),
  h("h2", {}, "Config"), h("pre", {}, pretty(agent.config)),
  agent.approval ? [h("h2", {}, "Approval policy"), h("pre", {}, pretty(agent.approval))] : null);
}

function stepItem(s) {
  const what = s.kind === "tool_call" ? `calls ${s.tool_name}` : s.kind === "tool_result" ? `${s.tool_name} answered` : s.kind.replace("_", " ");
  return h("li", { class: `kind-${s.kind}` },
    h("div", { class: "muted" }, `#${s.seq} · ${s.role || ""} · ${what}`),
    s.content ? h("div", {}, s.content) : null,
    s.arguments ? h("pre", {}, pretty(s.arguments)) : null,
    s.result !== null && s.result !== undefined && s.kind !== "approval_requested" ? h("pre", {}, pretty(s.result)) : null,
    s.kind === "approval_requested" ? h("a", { href: "#/approvals" }, "Decide it in Approvals") : null);
}

function agentChat(body, agent, ctx) {
  const message = h("textarea", { rows: 3, required: true });
  const steps = h("ol", { class: "steps", "aria-live": "polite", "aria-label": "Run steps" });
  const runInfo = h("div", {});
  const out = h("div", {});
  const button = h("button", { type: "submit" }, "Send");
  let conversation = null;
  const form = h("form", { class: "card", "aria-label": "Chat" },
    field("Message", message, "Sent to the agent's chat stream; the run's steps appear below as they happen."),
    h("p", {}, button), out);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(button, out, async () => {
      const text = message.value;
      message.value = "";
      let runId = null;
      const req = { message: text };
      if (conversation) req.conversation_id = conversation;
      await sse(`/agents/${agent.id}/chat/stream`, {
        method: "POST", body: req, signal: ctx.abort.signal,
        onEvent: (event, data) => {
          let d;
          try { d = JSON.parse(data); } catch { return; }
          if (event === "step") {
            if (!runId && d.run_id) {
              runId = d.run_id;
              runInfo.replaceChildren(h("p", {}, "Run ", h("a", { href: `#/runs/${runId}` }, short(runId)), " is streaming."));
            }
            steps.append(stepItem(d));
          } else if (event === "done" || event === "end") {
            if (d.conversation_id) conversation = d.conversation_id;
            runInfo.append(h("p", {}, "Run ended: ", statusTag(d.status || "succeeded")));
          }
        },
      }).catch((e) => { if (e.name !== "AbortError") throw e; });
    });
  });
  body.append(form, runInfo, steps);
}

async function agentApi(body, agent, ctx) {
  const ep = endpoints(agent);
  body.append(h("div", { class: "card" },
    h("h2", {}, "Endpoints"),
    h("p", { class: "muted" }, "Add your API key when you use them: Authorization: Bearer <your key>."),
    copyLine("Chat", ep.chat), copyLine("Chat stream (SSE)", ep.chatStream),
    copyLine("MCP Streamable HTTP", ep.mcpHttp), copyLine("MCP SSE", ep.mcpSse)));
  body.append(examples(agent, ep));
  const keys = h("div", {});
  body.append(keys);
  await keysSection(keys, ctx, agent);
}

function examples(agent, ep) {
  const curl = `curl -X POST '${ep.chat}' \\
  -H 'Authorization: Bearer your_api_key_here' \\
  -H 'Content-Type: application/json' \\
  -d '{"message": "What is the price of product X?"}'`;
  const js = `// JavaScript - send a message to the agent via MCP
const response = await fetch(
  '${ep.mcpHttp}',
  {
    method: 'POST',
    headers: {
      'Authorization': 'Bearer your_api_key_here',
      'Content-Type': 'application/json',
      'Accept': 'application/json'
    },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: {
        name: 'send_message',
        arguments: { message: 'What is the price of product X?' }
      }
    })
  }
);
// Read the response
const reader = response.body.getReader();
const decoder = new TextDecoder();
let result = '';
while (true) {
  const { done, value } = await reader.read();
  if (done) break;
  result += decoder.decode(value);
}
console.log(JSON.parse(result)); // The agent's answer`;
  const py = `# Python - send a message to the agent (pip install requests)
import requests

response = requests.post(
    "${ep.chat}",
    headers={"Authorization": "Bearer your_api_key_here"},
    json={"message": "What is the price of product X?"},
    timeout=60,
)
response.raise_for_status()
print(response.json()["output"])  # The agent's answer`;
  return h("div", { class: "card" },
    h("h2", {}, "Integration examples"),
    h("p", { class: "muted" }, "Show these to your web developer together with your API key: they will know what to do."),
    [["curl", curl], ["JavaScript", js], ["Python", py]].map(([label, code]) => h("div", {},
      h("div", { class: "row" }, h("h3", {}, label), copyButton(code, `Copy the ${label} example`)),
      h("pre", { "aria-label": `${label} example` }, code))));
}

// ---- API keys ------------------------------------------------------------------------------

async function keysPage(page, ctx) {
  page.append(h("h1", {}, "API keys"),
    h("p", { class: "muted" }, "An API key is like a special password your website or app uses to talk to your agents. Use different keys for different projects."));
  await keysSection(page, ctx, null);
}

async function keysSection(el, ctx, agent) {
  const listBox = h("div", { class: "card" }, h("h2", {}, agent ? "Keys limited to this agent" : "Your keys"));
  let agents = [];
  if (!agent) {
    try { agents = await all("/agents", 500); } catch { agents = []; }
  }
  if (ctx !== current) return;
  if (hasScope("keys:write")) el.append(generateForm(agent, agents, () => drawKeys()));
  el.append(listBox);
  const rows = h("div", {});
  listBox.append(rows);
  async function drawKeys() {
    rows.replaceChildren();
    await section(rows, async () => {
      let keys = await all("/api-keys", 1000);
      if (agent) keys = keys.filter((k) => k.agent_ids.includes(agent.id));
      const names = new Map(agents.map((a) => [a.id, a.name]));
      rows.append(table(["Name", "Prefix", "Scopes", "Agents", "Created", "Expires", "Last used", "Status", ""],
        keys.map((k) => [k.name, h("code", {}, `${k.prefix}…`), k.scopes.join(", "),
          k.agent_ids.length ? k.agent_ids.map((a) => names.get(a) || (agent && a === agent.id ? agent.name : short(a))).join(", ") : "all",
          when(k.created_at), k.expires_at ? when(k.expires_at) : "never", when(k.last_used_at),
          statusTag(keyStatus(k)), keyStatus(k) === "active" && hasScope("keys:write") ? revokeControl(k, drawKeys) : ""]),
        agent ? "No key is limited to this agent yet." : "No keys yet."));
    });
  }
  await drawKeys();
}

function keyStatus(k) {
  if (k.revoked_at) return "revoked";
  if (k.expires_at && new Date(k.expires_at) <= new Date()) return "expired";
  return "active";
}

function revokeControl(k, done) {
  const box = h("span", {});
  const start = h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.name}` }, "Revoke");
  const out = h("span", {});
  start.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "danger" }, "Yes, revoke");
    const no = h("button", { type: "button", class: "secondary" }, "Cancel");
    box.replaceChildren(h("span", { role: "alertdialog", "aria-label": `Confirm revoking ${k.name}` },
      h("span", {}, `Revoke "${k.name}"? It stops working at once. This cannot be undone. `), yes, " ", no, out));
    yes.focus();
    no.addEventListener("click", () => { box.replaceChildren(start, out); start.focus(); });
    yes.addEventListener("click", () => act(yes, out, async () => {
      await post(`/api-keys/${k.id}/revoke`);
      say(`Key ${k.name} revoked`);
      await done();
    }));
  });
  box.append(start, out);
  return box;
}

function generateForm(agent, agents, done) {
  const me = self();
  const mine = me && me.scopes && !me.scopes.includes("all") ? me.scopes : SCOPES;
  const name = h("input", { type: "text", required: true, maxlength: 200, placeholder: "Main website" });
  const lifetimes = h("fieldset", {}, h("legend", {}, "Lifetime"),
    LIFETIMES.map(([v, label], i) => h("label", { class: "inline" },
      h("input", { type: "radio", name: "lifetime", value: v, checked: i === 0 }), label)));
  const defaults = agent ? ["agents:read", "signals:write"] : [];
  const scopes = h("fieldset", {}, h("legend", {}, "Scopes"),
    mine.map((s) => h("label", { class: "inline" },
      h("input", { type: "checkbox", name: "scope", value: s, checked: defaults.includes(s) }), s)));
  let agentsBox = null;
  if (agent) {
    agentsBox = h("p", { class: "muted" }, `Limited to this agent (${agent.name}).`);
  } else if (agents.length) {
    agentsBox = h("fieldset", {}, h("legend", {}, "Agents (none checked: all agents)"),
      agents.map((a) => h("label", { class: "inline" }, h("input", { type: "checkbox", name: "agent", value: a.id }), a.name)));
  }
  const out = h("div", {});
  const shown = h("div", {});
  const button = h("button", { type: "submit" }, "Generate key");
  const form = h("form", { class: "card", "aria-labelledby": "gen-key" },
    h("h2", { id: "gen-key" }, agent ? "Generate a key for this agent" : "Generate key"),
    field("Name", name, "A descriptive name, e.g. \"Main website\" or \"Mobile app\"."),
    lifetimes, scopes, agentsBox, h("p", {}, button), out, shown);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(button, out, async () => {
      const picked = [...form.querySelectorAll("input[name=scope]:checked")].map((i) => i.value);
      if (!picked.length) throw new ApiError(400, { message: "Pick at least one scope." });
      const body = {
        name: name.value,
        expires: form.querySelector("input[name=lifetime]:checked").value,
        scopes: picked,
        agent_ids: agent ? [agent.id] : [...form.querySelectorAll("input[name=agent]:checked")].map((i) => i.value),
      };
      const created = await post("/api-keys", body);
      name.value = "";
      const dismiss = h("button", { type: "button", class: "secondary" }, "I have stored it");
      dismiss.addEventListener("click", () => { shown.replaceChildren(); name.focus(); });
      shown.replaceChildren(h("div", { class: "card secret", role: "region", "aria-label": "Your new API key" },
        h("p", {}, h("strong", {}, "⚠️ VERY IMPORTANT: "), "Copy and store the key immediately. It is shown ONLY once. If you lose it, you will have to create a new one."),
        h("div", { class: "copy" }, h("code", { id: "new-key" }, created.key), copyButton(created.key, "Copy the new key")),
        h("p", { class: "muted" }, "Never share it publicly; keep it in a password manager; revoke it if you think it leaked."),
        dismiss));
      say("Key generated: copy it now, it is shown only once");
      await done();
    });
  });
  return form;
}

// ---- runs ----------------------------------------------------------------------------------

async function runsPage(page, ctx) {
  page.append(h("h1", {}, "Runs"));
  const agents = await all("/agents", 500);
  if (ctx !== current) return;
  const q = query();
  const agentSel = h("select", { name: "agent" }, h("option", { value: "" }, "All agents"),
    agents.map((a) => h("option", { value: a.id, selected: q.get("agent") === a.id }, a.name)));
  const status = h("select", { name: "status" }, h("option", { value: "" }, "Any status"),
    ["queued", "running", "waiting_approval", ...FINAL].map((s) => h("option", { value: s, selected: q.get("status") === s }, s)));
  const trigger = h("select", { name: "trigger" }, h("option", { value: "" }, "Any trigger"),
    ["signal", "api", "chat", "webhook", "schedule", "mcp"].map((s) => h("option", { value: s, selected: q.get("trigger") === s }, s)));
  const form = h("form", { class: "card grid", "aria-label": "Filter runs" },
    field("Agent", agentSel), field("Status", status), field("Trigger", trigger),
    h("div", {}, h("label", { "aria-hidden": "true" }, " "), h("button", { type: "submit" }, "Filter")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(`#/runs${qs({ agent: agentSel.value, status: status.value, trigger: trigger.value })}`);
  });
  page.append(form);
  const box = h("div", {});
  page.append(box);
  await runsList(box, ctx, agents, { agent: q.get("agent"), status: q.get("status"), trigger: q.get("trigger") });
}

async function runsList(box, ctx, agents, f) {
  const names = new Map(agents.map((a) => [a.id, a.name]));
  const filter = qs({ status: f.status, trigger: f.trigger });
  const targets = f.agent ? [f.agent] : agents.map((a) => a.id);
  const pages = await Promise.all(targets.map((id) =>
    get(`/agents/${id}/runs${filter}${filter ? "&" : "?"}limit=${f.agent ? 100 : 25}`).then((p) => p.data)));
  if (ctx !== current) return;
  const runs = pages.flat().sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  box.append(h("div", { class: "card" }, table(["Run", "Agent", "Status", "Trigger", "Created", "Finished"],
    runs.map((r) => [h("a", { href: `#/runs/${r.id}` }, short(r.id)), names.get(r.agent_id) || short(r.agent_id),
      statusTag(r.status), r.trigger?.type || "", when(r.created_at), when(r.finished_at)]), "No runs match.")));
}

async function runPage(page, ctx, id) {
  page.append(h("p", {}, h("a", { href: "#/runs" }, "← Runs")), h("h1", {}, `Run ${short(id)}`));
  const head = h("div", {});
  const steps = h("ol", { class: "steps", "aria-label": "Steps", "aria-live": "polite" });
  const streamNote = h("p", { class: "muted" });
  page.append(head, h("h2", {}, "Steps"), streamNote, steps);
  let run = await get(`/runs/${id}`);
  const agentName = await get(`/agents/${run.agent_id}`).then((a) => a.name, () => null);
  if (ctx !== current) return;
  const drawHead = () => {
    const out = h("div", {});
    const cancel = h("button", { type: "button", class: "danger" }, "Cancel run");
    cancel.addEventListener("click", () => act(cancel, out, async () => {
      run = await post(`/runs/${id}/cancel`);
      say("Cancel requested");
      drawHead();
    }));
    head.replaceChildren(h("div", {}, h("div", { class: "card" },
      h("p", {}, "Status: ", h("span", { id: "run-status" }, statusTag(run.status)), " · agent ",
        h("a", { href: `#/agents/${run.agent_id}` }, agentName || short(run.agent_id)), ` · trigger ${run.trigger?.type || ""}`),
      h("p", { class: "muted" }, `Created ${when(run.created_at)} · started ${when(run.started_at)} · finished ${when(run.finished_at)} · attempts ${run.attempts}`),
      !FINAL.includes(run.status) && hasScope("signals:write") ? h("p", {}, cancel, out) : null),
    h("h2", {}, "Input"), h("pre", {}, typeof run.input === "string" ? run.input : pretty(run.input)),
    h("h2", {}, "Output"), h("pre", { id: "run-output" }, run.output === null || run.output === undefined ? "—" : (typeof run.output === "string" ? run.output : pretty(run.output))),
    run.error ? [h("h2", {}, "Error"), alertBox("error", run.error)] : null,
    h("h2", {}, "Usage"), run.usage ? h("dl", { class: "grid card" }, Object.entries(run.usage).map(([k, v]) =>
      h("div", {}, h("dt", { class: "muted" }, k.replace(/_/g, " ")), h("dd", {}, typeof v === "object" ? pretty(v) : v)))) : h("p", { class: "muted" }, "Written when the run ends.")));
  };
  drawHead();
  let lastId = null;
  const seen = new Set();
  streamNote.textContent = "Streaming live…";
  for (let tries = 0; ctx === current && tries < 20; tries++) {
    try {
      await sse(`/runs/${id}/events`, {
        signal: ctx.abort.signal, lastId,
        onEvent: async (event, data, eid) => {
          if (eid) lastId = eid;
          if (event === "step") {
            const s = JSON.parse(data);
            if (seen.has(s.seq)) return;
            seen.add(s.seq);
            steps.append(stepItem(s));
            if (s.kind === "approval_requested" || s.kind === "approval_decided" || s.kind === "output") {
              run = await get(`/runs/${id}`).catch(() => run);
              if (ctx === current) drawHead();
            }
          }
        },
      });
      if (ctx !== current) return;
      run = await get(`/runs/${id}`);
      if (ctx !== current) return;
      drawHead();
      if (FINAL.includes(run.status)) {
        streamNote.textContent = "The run has ended.";
        say(`Run ${run.status}`);
        return;
      }
    } catch (e) {
      if (e.name === "AbortError" || ctx !== current) return;
      streamNote.replaceChildren(problem(e));
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// ---- approvals -----------------------------------------------------------------------------

async function approvalsPage(page, ctx) {
  page.append(h("h1", {}, "Approvals"),
    h("p", { class: "muted" }, "Tool calls waiting for a person. This page updates by itself."));
  const pending = h("div", {});
  const decided = h("div", {});
  page.append(h("h2", {}, "Pending"), pending, h("h2", {}, "Decided"), decided);
  const agents = await all("/agents", 500).catch(() => []);
  const names = new Map(agents.map((a) => [a.id, a.name]));
  const drafts = new Map();
  let shape = "";
  const draw = async () => {
    // Every pending one, and the latest decided ones: two requests a tick, however long the history.
    const [open_, recent] = await Promise.all([all("/approvals?status=pending", 1000), get("/approvals?limit=100")]);
    if (ctx !== current) return;
    const rows = [...open_, ...recent.data.filter((a) => a.status !== "pending")];
    const next = rows.map((a) => `${a.id}:${a.status}`).join(",");
    if (next === shape) return;
    shape = next;
    const open = rows.filter((a) => a.status === "pending");
    pending.replaceChildren(open.length ? h("div", {}, open.map((a) => approvalCard(a, names, drafts, draw)))
      : h("p", { class: "muted" }, "Nothing waits for you."));
    decided.replaceChildren(h("div", { class: "card" }, table(["Tool", "Agent", "Run", "Decision", "By", "Comment", "Decided"],
      rows.filter((a) => a.status !== "pending").slice(0, 100).map((a) => [a.tool, names.get(a.agent_id) || short(a.agent_id),
        h("a", { href: `#/runs/${a.run_id}` }, short(a.run_id)), statusTag(a.status), a.decided_by ? short(a.decided_by) : "—",
        a.comment || "", when(a.decided_at)]), "None decided yet.")));
  };
  await draw();
  const tick = async () => {
    if (ctx !== current) return;
    try { await draw(); } catch { /* the next tick tries again */ }
    setTimeout(tick, 2000);
  };
  setTimeout(tick, 2000);
}

function approvalCard(a, names, drafts, done) {
  const comment = h("textarea", { rows: 2, maxlength: 2000 });
  comment.value = drafts.get(a.id) || "";
  comment.addEventListener("input", () => drafts.set(a.id, comment.value));
  const out = h("div", {});
  const decide = (verb) => {
    const b = h("button", { type: "button", class: verb === "approve" ? "" : "danger", "aria-label": `${verb === "approve" ? "Approve" : "Reject"} ${a.tool}` },
      verb === "approve" ? "Approve" : "Reject");
    b.addEventListener("click", () => act(b, out, async () => {
      const body = comment.value.trim() ? { comment: comment.value.trim() } : undefined;
      await post(`/approvals/${a.id}/${verb}`, body);
      drafts.delete(a.id);
      say(`${a.tool} ${verb === "approve" ? "approved" : "rejected"}`);
      await done();
    }));
    return b;
  };
  return h("article", { class: "card", "aria-label": `Approval for ${a.tool}` },
    h("h3", {}, `${names.get(a.agent_id) || "An agent"} wants to call `, h("code", {}, a.tool)),
    h("p", { class: "muted" }, "Run ", h("a", { href: `#/runs/${a.run_id}` }, short(a.run_id)),
      ` · asked ${when(a.created_at)} · expires ${when(a.expires_at)} · if rejected: ${a.on_reject}`),
    h("pre", { "aria-label": "Arguments" }, pretty(a.arguments)),
    field("Comment (optional)", comment), h("p", { class: "row" }, decide("approve"), decide("reject")), out);
}

// ---- webhooks ------------------------------------------------------------------------------

async function webhooksPage(page, ctx) {
  page.append(h("h1", {}, "Webhooks"), h("p", { class: "muted" }, "Endpoints that receive signed events about your runs."));
  const eps = await all("/webhooks", 500);
  if (ctx !== current) return;
  page.append(h("div", { class: "card" }, table(["URL", "Events", "Status", "Created"], eps.map((e) => [
    h("a", { href: `#/webhooks/${e.id}` }, e.url), e.event_types.length ? e.event_types.join(", ") : "all",
    e.enabled ? statusTag("active") : h("span", {}, statusTag("disabled"), " ", e.disabled_reason || ""), when(e.created_at)]),
  "No endpoints yet.")));
  if (!hasScope("webhooks:write")) return;
  const url = h("input", { type: "url", required: true });
  const description = h("input", { type: "text" });
  const types = h("input", { type: "text", placeholder: "run.succeeded, run.failed" });
  const out = h("div", {});
  const button = h("button", { type: "submit" }, "Add endpoint");
  const form = h("form", { class: "card", "aria-labelledby": "new-ep" }, h("h2", { id: "new-ep" }, "Add an endpoint"),
    field("URL", url), field("Description", description), field("Event types", types, "Comma-separated; empty for every event."),
    h("p", {}, button), out);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(button, out, async () => {
      const body = { url: url.value, event_types: types.value.split(",").map((s) => s.trim()).filter(Boolean) };
      if (description.value.trim()) body.description = description.value;
      const created = await post("/webhooks", body);
      out.replaceChildren(alertBox("ok", "Endpoint added. Its signing secret, shown only now: ",
        h("div", { class: "copy" }, h("code", {}, created.secret), copyButton(created.secret, "Copy the signing secret")),
        h("a", { href: `#/webhooks/${created.id}` }, "Open it")));
    });
  });
  page.append(form);
}

async function webhookPage(page, ctx, id) {
  const ep = await get(`/webhooks/${id}`);
  if (ctx !== current) return;
  page.append(h("p", {}, h("a", { href: "#/webhooks" }, "← Webhooks")), h("h1", {}, "Webhook endpoint"),
    h("div", { class: "card" }, copyLine("URL", ep.url),
      h("p", {}, ep.enabled ? statusTag("active") : statusTag("disabled"), " ", ep.description || "")));
  const deliveries = h("div", {});
  const out = h("div", {});
  if (hasScope("webhooks:write")) {
    const test = h("button", { type: "button" }, "Send test event");
    test.addEventListener("click", () => act(test, out, async () => {
      await post(`/webhooks/${id}/test`, {});
      say("Test event queued");
      await drawDeliveries();
    }));
    page.append(h("p", {}, test), out);
  }
  page.append(h("h2", {}, "Deliveries"), deliveries);
  async function drawDeliveries() {
    const ds = (await get(`/webhooks/${id}/deliveries?limit=50`)).data;
    if (ctx !== current) return;
    deliveries.replaceChildren(h("div", { class: "card" }, table(["Event", "Status", "Attempts", "Last status", "Last error", "Created", ""],
      ds.map((d) => [d.event_type, statusTag(d.status), String(d.attempts), d.last_status_code ?? "—", d.last_error || "",
        when(d.created_at), deliveryControls(id, d, drawDeliveries)]), "No deliveries yet.")));
  }
  await drawDeliveries();
}

function deliveryControls(epId, d, done) {
  const out = h("div", {});
  const retry = h("button", { type: "button", class: "secondary", "aria-label": `Retry delivery ${short(d.id)}` }, "Retry");
  retry.addEventListener("click", () => act(retry, out, async () => {
    await post(`/webhooks/${epId}/deliveries/${d.id}/retry`);
    say("Retry queued");
    await done();
  }));
  const show = h("button", { type: "button", class: "secondary", "aria-expanded": "false", "aria-label": `Attempts of delivery ${short(d.id)}` }, "Attempts");
  show.addEventListener("click", () => act(show, out, async () => {
    if (show.getAttribute("aria-expanded") === "true") {
      show.setAttribute("aria-expanded", "false");
      return;
    }
    const full = await get(`/webhooks/${epId}/deliveries/${d.id}`);
    show.setAttribute("aria-expanded", "true");
    out.append(table(["#", "Started", "Status", "Latency", "Error"], (full.attempt_log || []).map((a) => [
      String(a.attempt), when(a.started_at), a.status_code ?? "—", a.latency_ms != null ? `${Math.round(a.latency_ms)} ms` : "—", a.error || ""]),
    "No attempt yet."));
  }));
  return h("div", {}, h("span", { class: "row" }, hasScope("webhooks:write") ? retry : null, show), out);
}

// ---- inbound hooks -------------------------------------------------------------------------

async function hooksPage(page, ctx) {
  page.append(h("h1", {}, "Inbound hooks"),
    h("p", { class: "muted" }, "Public URLs through which other services (a form, a payment provider…) start an agent."));
  const agents = await all("/agents", 500);
  if (ctx !== current) return;
  const lists = await Promise.all(agents.map((a) => get(`/agents/${a.id}/inbound-webhooks?limit=200`).then((p) => p.data.map((x) => [a, x]))));
  if (ctx !== current) return;
  page.append(h("div", { class: "card" }, table(["Agent", "Public URL", "Scheme", "Description", "Created"],
    lists.flat().map(([a, x]) => [h("a", { href: `#/agents/${a.id}` }, a.name),
      h("div", { class: "copy" }, h("code", {}, x.url), copyButton(x.url, `Copy the hook URL of ${a.name}`)), x.scheme, x.description || "", when(x.created_at)]),
    "No inbound hooks yet.")));
  if (!hasScope("agents:write") || !agents.length) return;
  const agentSel = h("select", {}, agents.map((a) => h("option", { value: a.id }, a.name)));
  const scheme = h("select", {}, ["standard", "none", "hmac_sha256", "github", "stripe", "slack", "shopify"].map((s) => h("option", { value: s }, s)));
  const secret = h("input", { type: "password", autocomplete: "off" });
  const header = h("input", { type: "text", placeholder: "X-Signature" });
  const description = h("input", { type: "text" });
  const out = h("div", {});
  const button = h("button", { type: "submit" }, "Create hook");
  const form = h("form", { class: "card", "aria-labelledby": "new-hook" }, h("h2", { id: "new-hook" }, "New inbound hook"),
    field("Agent", agentSel), field("Signature scheme", scheme, "standard: Standard Webhooks (a secret is generated); none: anyone with the URL can call it."),
    field("Provider's signing secret", secret, "Needed for every scheme but standard and none."),
    field("Signature header (hmac_sha256 only)", header), field("Description", description), h("p", {}, button), out);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(button, out, async () => {
      const body = { scheme: scheme.value };
      if (secret.value) body.secret = secret.value;
      if (header.value && scheme.value === "hmac_sha256") body.header_name = header.value;
      if (description.value) body.description = description.value;
      const hook = await post(`/agents/${agentSel.value}/inbound-webhooks`, body);
      say("Hook created");
      go("#/hooks");
      if (hook.secret) setTimeout(() => say("The hook's secret was shown once in the answer"), 0);
    });
  });
  page.append(form);
}

// ---- request logs, usage, audit, notifications -----------------------------------------------

const isoOrEmpty = (v) => (v ? new Date(v).toISOString() : "");
const localInput = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16) : "");

async function logsPage(page, ctx) {
  page.append(h("h1", {}, "Request logs"));
  const q = query();
  const agents = hasScope("agents:read") ? await all("/agents", 500).catch(() => []) : [];
  if (ctx !== current) return;
  const inputs = {
    from: h("input", { type: "datetime-local", value: localInput(q.get("from")) }),
    to: h("input", { type: "datetime-local", value: localInput(q.get("to")) }),
    key_id: h("input", { type: "text", value: q.get("key_id") || "", placeholder: "key id" }),
    agent_id: h("select", {}, h("option", { value: "" }, "Any agent"), agents.map((a) => h("option", { value: a.id, selected: q.get("agent_id") === a.id }, a.name))),
    status: h("input", { type: "number", min: 100, max: 599, value: q.get("status") || "" }),
    q: h("input", { type: "search", value: q.get("q") || "", maxlength: 200 }),
  };
  const form = h("form", { class: "card grid", "aria-label": "Search request logs" },
    field("From", inputs.from), field("To", inputs.to), field("Key id", inputs.key_id), field("Agent", inputs.agent_id),
    field("Status", inputs.status), field("Text in path or body", inputs.q),
    h("div", {}, h("label", { "aria-hidden": "true" }, " "), h("button", { type: "submit" }, "Search")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(`#/logs${qs({ from: isoOrEmpty(inputs.from.value), to: isoOrEmpty(inputs.to.value), key_id: inputs.key_id.value.trim(),
      agent_id: inputs.agent_id.value, status: inputs.status.value, q: inputs.q.value })}`);
  });
  page.append(form);
  const filters = qs({ from: q.get("from"), to: q.get("to"), key_id: q.get("key_id"), agent_id: q.get("agent_id"), status: q.get("status"), q: q.get("q") });
  const logs = await get(`/request-logs${filters}${filters ? "&" : "?"}limit=100`);
  if (ctx !== current) return;
  const names = new Map(agents.map((a) => [a.id, a.name]));
  page.append(h("div", { class: "card" }, table(["Time", "Method", "Path", "Status", "Latency", "Key", "Agent"],
    logs.data.map((l) => [when(l.created_at), l.method, h("code", {}, l.path), String(l.status), `${Math.round(l.latency_ms)} ms`,
      l.key_id ? short(l.key_id) : "—", l.agent_id ? names.get(l.agent_id) || short(l.agent_id) : "—"]), "No request matches.")));
}

async function usagePage(page, ctx) {
  page.append(h("h1", {}, "Usage"));
  const q = query();
  const agents = hasScope("agents:read") ? await all("/agents", 500).catch(() => []) : [];
  if (ctx !== current) return;
  const agentSel = h("select", {}, h("option", { value: "" }, "All agents"), agents.map((a) => h("option", { value: a.id, selected: q.get("agent_id") === a.id }, a.name)));
  const form = h("form", { class: "card grid", "aria-label": "Usage filter" }, field("Agent", agentSel),
    h("div", {}, h("label", { "aria-hidden": "true" }, " "), h("button", { type: "submit" }, "Show")));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); go(`#/usage${qs({ agent_id: agentSel.value })}`); });
  page.append(form);
  const u = await get(`/usage${qs({ agent_id: q.get("agent_id") })}`);
  if (ctx !== current) return;
  const t = u.totals;
  page.append(h("p", { class: "muted" }, `${when(u.from)} to ${when(u.to)}`),
    h("dl", { class: "grid card" }, [["Runs", t.runs], ["Steps", t.steps], ["Tool calls", t.tool_calls], ["Run time", `${(t.duration_ms / 1000).toFixed(1)} s`],
      ["Input tokens", t.input_tokens], ["Output tokens", t.output_tokens]].map(([k, v]) => h("div", {}, h("dt", { class: "muted" }, k), h("dd", {}, String(v))))),
    h("h2", {}, "Runs by day"), h("div", { class: "card" }, chart(everyDay(u))));
  const names = new Map(agents.map((a) => [a.id, a.name]));
  page.append(h("h2", {}, "By agent"), h("div", { class: "card" }, table(["Agent", "Runs", "Steps", "Tool calls", "Input tokens", "Output tokens"],
    u.by_agent.map((a) => [names.get(a.agent_id) || short(a.agent_id), a.runs, a.steps, a.tool_calls, a.input_tokens, a.output_tokens].map(String)), "No usage in this range.")));
}

// The report's days, with the days that had no run filled in, so the chart is a calendar.
function everyDay(u) {
  const had = new Map(u.by_day.map((d) => [d.date, d]));
  const out = [];
  const end = new Date(u.to);
  for (let d = new Date(u.from); d < end && out.length < 400; d = new Date(d.getTime() + 86400000)) {
    const date = d.toISOString().slice(0, 10);
    out.push(had.get(date) || { date, runs: 0 });
  }
  const last = end.toISOString().slice(0, 10);
  if (had.has(last) && !out.some((d) => d.date === last)) out.push(had.get(last));
  return out;
}

function chart(days) {
  if (!days.some((d) => d.runs > 0)) return h("p", { class: "muted" }, "No runs in this range.");
  const max = Math.max(1, ...days.map((d) => d.runs));
  const w = 600, top = 10, bottom = 30, barH = 150, step = w / days.length;
  const bars = days.map((d, i) => {
    const hgt = d.runs ? Math.max(2, (d.runs / max) * barH) : 0;
    const rect = svg("rect", { x: (i * step + step * 0.15).toFixed(1), y: (top + barH - hgt).toFixed(1), width: (step * 0.7).toFixed(1), height: hgt.toFixed(1) },
      svg("title", {}, `${d.date}: ${d.runs} runs`));
    const label = svg("text", { x: (i * step + step / 2).toFixed(1), y: top + barH + 14, "text-anchor": "middle" }, d.date.slice(5));
    const every = Math.ceil(days.length / 10);
    return [rect, (days.length - 1 - i) % every === 0 ? label : null];
  }).flat().filter(Boolean);
  return h("figure", {},
    svg("svg", { class: "chart", viewBox: `0 0 ${w} ${top + barH + bottom}`, role: "img", "aria-label": `Runs per day, highest ${max}` }, ...bars),
    h("figcaption", { class: "visually-hidden" }, days.map((d) => `${d.date}: ${d.runs}`).join("; ")));
}

async function auditPage(page, ctx) {
  page.append(h("h1", {}, "Audit log"));
  const q = query();
  const action = h("input", { type: "text", value: q.get("action") || "", placeholder: "agent.created" });
  const target = h("input", { type: "text", value: q.get("target") || "" });
  const form = h("form", { class: "card grid", "aria-label": "Filter the audit log" }, field("Action", action), field("Target", target),
    h("div", {}, h("label", { "aria-hidden": "true" }, " "), h("button", { type: "submit" }, "Filter")));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); go(`#/audit${qs({ action: action.value.trim(), target: target.value.trim() })}`); });
  page.append(form);
  const filters = qs({ action: q.get("action"), target: q.get("target") });
  const logs = await get(`/audit-logs${filters}${filters ? "&" : "?"}limit=100`);
  if (ctx !== current) return;
  page.append(h("div", { class: "card" }, table(["Time", "Actor", "Action", "Target", "Details"],
    logs.data.map((l) => [when(l.created_at), l.actor_key_id ? `key ${short(l.actor_key_id)}` : l.actor_type, h("code", {}, l.action),
      `${l.target_type || ""} ${l.target_id ? short(l.target_id) : ""}`, l.details ? h("pre", {}, pretty(l.details)) : ""]), "No entries.")));
}

async function notificationsPage(page, ctx) {
  page.append(h("h1", {}, "Notifications"));
  const unreadOnly = query().get("unread") === "true";
  const toggle = h("a", { href: unreadOnly ? "#/notifications" : "#/notifications?unread=true" }, unreadOnly ? "Show all" : "Show unread only");
  const out = h("div", {});
  const readAll = h("button", { type: "button", class: "secondary" }, "Mark all read");
  readAll.addEventListener("click", () => act(readAll, out, async () => {
    await post("/notifications/read-all");
    say("All marked read");
    render();
  }));
  page.append(h("p", { class: "row" }, toggle, hasScope("notifications:write") ? readAll : null), out);
  const list = await get(`/notifications${unreadOnly ? "?unread=true&" : "?"}limit=100`);
  if (ctx !== current) return;
  page.append(h("div", { class: "card" }, table(["", "Title", "What", "Links", "When", ""], list.data.map((n) => {
    const mark = h("button", { type: "button", class: "secondary", "aria-label": `Mark "${n.title}" read` }, "Mark read");
    const o = h("span", {});
    mark.addEventListener("click", () => act(mark, o, async () => { await post(`/notifications/${n.id}/read`); render(); }));
    return [n.read ? "read" : h("strong", {}, "unread"), n.title, n.body,
      h("span", {}, n.run_id ? h("a", { href: `#/runs/${n.run_id}` }, "run ") : null, n.approval_id ? h("a", { href: "#/approvals" }, "approvals") : null),
      when(n.created_at), !n.read && hasScope("notifications:write") ? h("span", {}, mark, o) : ""];
  }), "No notifications.")));
}

// ---- start ---------------------------------------------------------------------------------

function closeMenu() {
  document.getElementById("nav").classList.remove("open");
  document.getElementById("menu-toggle").setAttribute("aria-expanded", "false");
}

window.addEventListener("hashchange", () => {
  closeMenu();
  render();
  document.getElementById("main").focus({ preventScroll: true });
});
window.addEventListener("unhandledrejection", (ev) => {
  // Navigating away aborts streams; that is not an error.
  if (ev.reason && ev.reason.name === "AbortError") ev.preventDefault();
});
document.getElementById("menu-toggle").addEventListener("click", (ev) => {
  const open = document.getElementById("nav").classList.toggle("open");
  ev.currentTarget.setAttribute("aria-expanded", String(open));
});
render();
