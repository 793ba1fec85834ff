// Clawdbot web chat. Plain DOM, no framework, no build step.
// Model output is untrusted: it goes Markdown -> HTML (raw HTML escaped, images
// dropped) -> DOMPurify -> the page. Nothing the model writes runs as script.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  conv: null,          // the open conversation {id, title, mode, ...}
  list: [],            // conversations in the sidebar
  streams: new Map(),  // conversation id -> its answer streaming in this page (see attachStream)
  defaultMode: "general",
  modeChosen: false,   // the user picked a mode: the server's default no longer applies
  status: null,        // the last /api/status
  health: null,        // {state: ok|loading|down|error|finding, detail}
  sessions: null,      // {active, queued, limit}: from every stream event and every poll
  lastBackend: null,
  pollTimer: 0,
};

// ---------------------------------------------------------------- rendering
function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

marked.use({
  gfm: true,
  breaks: true,
  renderer: {
    // Raw HTML in model output is shown as text, never parsed.
    html: ({ text }) => escapeHtml(text),
    // Images would fetch from wherever the model says; show the alt text instead.
    image: ({ text }) => escapeHtml(text || ""),
    // Links the model made up go wherever it says: shown as text (the address beside it), never clickable.
    link(token) {
      const label = this.parser.parseInline(token.tokens);
      const plain = token.text || "";
      return token.href && token.href !== plain && token.href !== "mailto:" + plain
        ? `${label} <span class="url">(${escapeHtml(token.href)})</span>` : label;
    },
  },
});

const PURIFY = {
  ALLOWED_TAGS: ["p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre",
    "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "input", "span"],
  ALLOWED_ATTR: ["href", "title", "class", "type", "checked", "disabled", "start", "align"],
  ALLOW_DATA_ATTR: false,
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "INPUT" && node.getAttribute("type") !== "checkbox") node.remove();
});

function renderMarkdown(el, text, final) {
  el.innerHTML = DOMPurify.sanitize(marked.parse(text), PURIFY);
  // Highlighting every token of a stream would burn the NUC's CPU; do it once at the end.
  if (final) decorateCode(el);
}

const EXT = { python: "py", javascript: "js", typescript: "ts", bash: "sh", shell: "sh", json: "json", html: "html",
  css: "css", java: "java", c: "c", cpp: "cpp", go: "go", rust: "rs", sql: "sql", yaml: "yaml", markdown: "md" };

function decorateCode(el) {
  for (const code of el.querySelectorAll("pre > code")) {
    const lang = ([...code.classList].find((c) => c.startsWith("language-")) || "").slice(9);
    if (window.hljs) {
      if (lang && hljs.getLanguage(lang)) hljs.highlightElement(code);
      else code.classList.add("hljs");
    }
    const bar = document.createElement("div");
    bar.className = "codebar";
    const tag = document.createElement("span");
    tag.className = "lang";
    tag.textContent = lang;
    bar.append(tag);
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = t("copy");
    copy.setAttribute("aria-label", t("copy") + (lang ? " " + lang : ""));
    copy.addEventListener("click", async () => {
      await copyText(code.textContent);
      copy.textContent = t("copied");
      setTimeout(() => { copy.textContent = t("copy"); }, 1500);
    });
    bar.append(copy);
    if (state.conv && state.conv.mode === "code") {
      const dl = document.createElement("button");
      dl.type = "button";
      dl.className = "download";
      dl.textContent = t("download");
      dl.addEventListener("click", () => {
        const blob = new Blob([code.textContent], { type: "text/plain;charset=utf-8" });
        const a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = "snippet." + (EXT[lang] || lang || "txt");
        a.click();
        setTimeout(() => URL.revokeObjectURL(a.href), 1000);
      });
      bar.append(dl);
    }
    code.parentElement.append(bar);
  }
}

async function copyText(s) {
  try { await navigator.clipboard.writeText(s); return; } catch (e) { /* plain http: fall back */ }
  const ta = document.createElement("textarea");
  ta.value = s;
  document.body.append(ta);
  ta.select();
  document.execCommand("copy");
  ta.remove();
}

// ---------------------------------------------------------------- messages
function messageEl(m) {
  const el = document.createElement("article");
  el.className = "msg " + m.role;
  el.dataset.id = m.id || "";
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = m.role === "user" ? t("you") : t("assistant");
  const body = document.createElement("div");
  body.className = "body";
  el.append(who, body);
  if (m.role === "user") body.textContent = m.content;
  else {
    const st = document.createElement("div");
    st.className = "state";
    el.append(st);
    if (m.content) renderMarkdown(body, m.content, m.status !== "streaming");
    setSources(el, m.sources || []);
    setState(el, m.status || "done", m.error);
  }
  return el;
}

// Plain words for the failures a user can act on; the server's own text stays available as detail.
const ERROR_WORDS = { backend_down: "backendDown", backend_lost: "backendLost" };

function setState(el, status, error, code) {
  el.dataset.state = status;
  const st = el.querySelector(".state");
  st.textContent = status === "queued" ? t("queued", { n: el.dataset.position || "?" })
    : status === "loading" ? t("modelLoading")
    : status === "stopped" ? t("stopped")
    : status === "interrupted" ? t("interrupted")
    : status === "streaming" && !el.querySelector(".body").textContent ? t("waiting")
    : "";
  let errEl = el.querySelector(".error");
  if (error) {
    if (!errEl) {
      errEl = document.createElement("div");
      errEl.className = "error";
      errEl.setAttribute("role", "alert");
      el.append(errEl);
    }
    const words = ERROR_WORDS[code];
    const msg = document.createElement("span");
    msg.className = "error-text";
    msg.textContent = words ? t(words) : t("errorKept", { msg: error });
    if (words) msg.title = error;
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "retry";
    retry.textContent = t("retry");
    retry.addEventListener("click", () => retryLast(el));
    errEl.replaceChildren(msg, retry);
  } else if (errEl) errEl.remove();
}

function retryLast(el) {
  // Retry means: ask the last question again, in the conversation on screen.
  if (!state.conv || state.streams.has(state.conv.id)) return;
  if (el !== [...document.querySelectorAll("#messages .msg")].pop()) return;
  send("", true);
}

function setSources(el, sources) {
  el.querySelector(".sources")?.remove();
  if (!sources.length) return;
  const det = document.createElement("details");
  det.className = "sources";
  const sum = document.createElement("summary");
  sum.textContent = t("sourcesN", { n: sources.length });
  const ol = document.createElement("ol");
  for (const s of sources) {
    const li = document.createElement("li");
    const b = document.createElement("strong");
    b.textContent = s.doc;
    const snip = document.createElement("span");
    snip.className = "snippet";
    snip.textContent = s.text;  // textContent: document text is no more trusted than model text
    li.append(b, snip);
    ol.append(li);
  }
  det.append(sum, ol);
  el.append(det);
}

function scrollDown() {
  const box = $("#messages");
  box.scrollTop = box.scrollHeight;
}

function showMessages(msgs) {
  const box = $("#messages");
  box.querySelectorAll(".msg").forEach((n) => n.remove());
  $("#empty").hidden = msgs.length > 0;
  for (const m of msgs) box.append(messageEl(m));
  scrollDown();
}

// ---------------------------------------------------------------- API
async function api(path, opts = {}) {
  const res = await fetch(path, {
    ...opts,
    headers: { "content-type": "application/json", ...(opts.headers || {}) },
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
  return body;
}

function shortTime(epoch) {
  const d = new Date(epoch * 1000);
  const now = new Date();
  const lang = document.documentElement.lang;
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString(lang, { month: "short", day: "numeric" });
}

async function refreshList() {
  const q = $("#search").value.trim();
  const { data } = await api("/api/conversations" + (q ? "?q=" + encodeURIComponent(q) : ""));
  state.list = data;
  const ul = $("#conv-list");
  ul.replaceChildren();
  for (const c of data) {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    if (state.conv && c.id === state.conv.id) li.className = "active";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    // Titles repeat ("Hello"); the time tells them apart.
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.title || t("untitled");
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = shortTime(c.updated);
    open.append(name, when);
    open.title = (c.title || t("untitled")) + " · " + new Date(c.updated * 1000).toLocaleString();
    if (state.conv && c.id === state.conv.id) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => openConversation(c.id));
    const ren = document.createElement("button");
    ren.type = "button";
    ren.className = "tool rename";
    ren.textContent = "✎";
    ren.title = t("rename");
    ren.setAttribute("aria-label", t("rename") + ": " + (c.title || t("untitled")));
    ren.addEventListener("click", () => renameConversation(c));
    const del = document.createElement("button");
    del.type = "button";
    del.className = "tool delete";
    del.textContent = "✕";
    del.title = t("delete");
    del.setAttribute("aria-label", t("delete") + ": " + (c.title || t("untitled")));
    del.addEventListener("click", () => deleteConversation(c));
    li.append(open, ren, del);
    ul.append(li);
  }
}

// In-page dialogs instead of prompt()/confirm(): translated, styled, and not blocked by kiosk browsers.
function ask({ title, value = null, ok, danger = false }) {
  const dlg = $("#ask");
  $("#ask-title").textContent = title;
  const input = $("#ask-input");
  input.hidden = value === null;
  input.value = value ?? "";
  const okBtn = $("#ask-ok");
  okBtn.textContent = ok;
  okBtn.classList.toggle("danger", danger);
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok" ? (value === null ? true : input.value.trim()) : null);
    }, { once: true });
    dlg.returnValue = "";
    dlg.showModal();
    if (value !== null) { input.focus(); input.select(); } else okBtn.focus();
  });
}

async function renameConversation(c) {
  const title = await ask({ title: t("renamePrompt"), value: c.title || "", ok: t("save") });
  if (title === null) return;
  await api("/api/conversations/" + c.id, { method: "PATCH", body: JSON.stringify({ title }) });
  if (state.conv && state.conv.id === c.id) {
    state.conv.title = title;
    $("#conv-title").textContent = title || t("untitled");
  }
  refreshList();
}

async function deleteConversation(c) {
  if (!(await ask({ title: t("deleteConfirm") + (c.title ? " " + c.title : ""), ok: t("delete"), danger: true }))) return;
  await api("/api/conversations/" + c.id, { method: "DELETE" });
  if (state.conv && state.conv.id === c.id) newChat();
  refreshList();
}

function showDocs(docs) {
  const box = $("#docs");
  box.replaceChildren();
  for (const d of docs || []) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = d.name;
    const rm = document.createElement("button");
    rm.type = "button";
    rm.textContent = "✕";
    rm.setAttribute("aria-label", t("removeDoc", { name: d.name }));
    rm.addEventListener("click", async () => {
      await api(`/api/conversations/${state.conv.id}/documents/${d.id}`, { method: "DELETE" });
      openConversation(state.conv.id);
    });
    chip.append(rm);
    box.append(chip);
  }
}

async function openConversation(id) {
  let c;
  try {
    c = await api("/api/conversations/" + id);
  } catch (e) {
    return newChat();
  }
  state.conv = c;
  location.hash = "c=" + c.id;
  $("#conv-title").textContent = c.title || t("untitled");
  $("#mode").value = c.mode;
  showMessages(c.messages);
  showDocs(c.documents);
  const s = state.streams.get(c.id);
  if (s) attachStream(s);  // still streaming in this page: show it live, not the last saved text
  else if (c.generating) followSaved(c.id);  // streaming for another tab: follow what it saves
  updateButtons();
  updateLibraryNote();
  closeSidebar();
  refreshList();
}

function newChat() {
  state.conv = null;
  history.replaceState(null, "", location.pathname);
  $("#conv-title").textContent = t("untitled");
  $("#mode").value = state.defaultMode;
  showMessages([]);
  showDocs([]);
  updateButtons();
  updateLibraryNote();
  refreshList();
  closeSidebar();
  $("#prompt").focus();
}

async function ensureConversation() {
  if (state.conv) return state.conv;
  const c = await api("/api/conversations", { method: "POST", body: JSON.stringify({ mode: $("#mode").value }) });
  state.conv = { ...c, messages: [], documents: [] };
  location.hash = "c=" + c.id;
  return state.conv;
}

function updateButtons() {
  const busy = !!(state.conv && state.streams.has(state.conv.id));
  $("#stop").disabled = !busy;
  $("#send").disabled = busy;
  const hasUser = !!document.querySelector("#messages .msg.user");
  $("#regenerate").disabled = busy || !hasUser;
}

function notice(text) {
  // A short line by the composer for "nothing happened, and here is why".
  const el = $("#notice");
  el.textContent = text;
  el.hidden = !text;
}

// ---------------------------------------------------------------- streams
// One record per conversation answering in this page. The record, not the DOM, holds the
// answer: switching chats detaches the element, and coming back attaches a fresh one.
function attachStream(s) {
  const box = $("#messages");
  let el = s.id ? box.querySelector(`.msg.assistant[data-id="${s.id}"]`) : null;
  const fresh = messageEl({ role: "assistant", id: s.id, content: "", status: s.status });
  fresh.setAttribute("aria-busy", "true");
  if (el) el.replaceWith(fresh);
  else {
    if (s.question && ![...box.querySelectorAll(".msg.user")].some((u) => u.querySelector(".body").textContent === s.question)) {
      box.append(messageEl({ role: "user", content: s.question }));
    }
    box.append(fresh);
  }
  $("#empty").hidden = true;
  s.el = fresh;
  setSources(fresh, s.sources || []);
  paintStream(s);
  scrollDown();
}

async function followSaved(id) {
  // The server saves a streaming answer every 0.5 s; re-read it until it is finished.
  while (state.conv && state.conv.id === id && !state.streams.has(id)) {
    await new Promise((r) => setTimeout(r, 700));
    if (!state.conv || state.conv.id !== id || state.streams.has(id)) return;
    let c;
    try { c = await api("/api/conversations/" + id); } catch (e) { return; }
    if (!state.conv || state.conv.id !== id || state.streams.has(id)) return;
    const last = c.messages[c.messages.length - 1];
    const el = last && $(`#messages .msg.assistant[data-id="${last.id}"]`);
    if (el) el.replaceWith(messageEl(last));
    else if (last) { showMessages(c.messages); }
    updateButtons();
    if (!c.generating) return;
  }
}

function paintStream(s) {
  s.pending = false;
  const el = s.el;
  if (!el || !el.isConnected) return;
  el.dataset.position = s.position || "";
  renderMarkdown(el.querySelector(".body"), s.text, s.finished);
  setState(el, s.status, s.error, s.code);
  if (s.finished) el.removeAttribute("aria-busy");
  if (state.conv && state.conv.id === s.cid) scrollDown();
}

function schedulePaint(s) {
  if (!s.pending) { s.pending = true; requestAnimationFrame(() => paintStream(s)); }
}

// ---------------------------------------------------------------- sending
async function send(content, regenerate) {
  let conv;
  try {
    conv = await ensureConversation();
  } catch (e) {
    notice(t("sendFailed", { msg: e.message }));
    return;
  }
  if (state.streams.has(conv.id)) { notice(t("busyHere")); return; }
  notice("");
  $("#empty").hidden = true;
  const box = $("#messages");
  if (regenerate) {
    // Drop the old answer from view; the server drops it from the store.
    const msgs = [...box.querySelectorAll(".msg")];
    while (msgs.length && !msgs[msgs.length - 1].classList.contains("user")) msgs.pop().remove();
  } else {
    box.append(messageEl({ role: "user", content }));
  }
  const s = {
    cid: conv.id, controller: new AbortController(), id: null, text: "", status: "streaming", error: null,
    code: null, position: null, sources: [], question: regenerate ? null : content, el: null, finished: false, pending: false,
  };
  s.el = messageEl({ role: "assistant", content: "", status: "streaming" });
  s.el.setAttribute("aria-busy", "true");  // screen readers announce the answer once, when complete
  box.append(s.el);
  scrollDown();
  state.streams.set(conv.id, s);
  updateButtons();
  schedulePoll();
  try {
    const res = await fetch(`/api/conversations/${conv.id}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(regenerate ? { regenerate: true } : { content }),
      signal: s.controller.signal,
    });
    if (!res.ok) {
      const b = await res.json().catch(() => ({}));
      throw new Error((b.error && b.error.message) || res.statusText);
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 2);
        if (!line.startsWith("data:")) continue;
        onEvent(s, JSON.parse(line.slice(5)));
      }
    }
  } catch (e) {
    if (e.name !== "AbortError" && !s.finished) {
      s.finished = true;
      s.status = "error";
      s.error = e.message;
      paintStream(s);
    }
  } finally {
    if (!s.finished) {
      s.finished = true;
      s.status = "stopped";
      paintStream(s);
    }
    state.streams.delete(conv.id);
    updateButtons();
    refreshList();
    pollStatus();
  }
}

function onEvent(s, ev) {
  if (ev.sessions) setSessions(ev.sessions);
  if (ev.type === "begin") {
    s.id = ev.id;
    if (s.el) s.el.dataset.id = ev.id;
    s.sources = ev.sources || [];
    if (s.el && s.el.isConnected) setSources(s.el, s.sources);
    if (ev.title && state.conv && state.conv.id === s.cid && !state.conv.title) {
      state.conv.title = ev.title;
      $("#conv-title").textContent = ev.title;
    }
    refreshList();
  } else if (ev.type === "queued") {
    s.position = ev.position;
    s.status = "queued";
    paintStream(s);
  } else if (ev.type === "loading") {
    s.status = "loading";
    setHealth({ state: "loading" });
    paintStream(s);
  } else if (ev.type === "start") {
    s.status = "streaming";
    state.lastBackend = ev.backend;
    setHealth({ state: "ok" });
    paintStream(s);
  } else if (ev.type === "retry") {
    if (s.el && s.el.isConnected) s.el.querySelector(".state").textContent = t("retrying");
  } else if (ev.type === "delta") {
    s.text += ev.text;
    schedulePaint(s);
  } else if (ev.type === "done" || ev.type === "stopped" || ev.type === "error") {
    s.finished = true;
    s.text = ev.content ?? s.text;
    s.status = ev.type;
    s.error = ev.error;
    s.code = ev.code;
    if (ev.code === "backend_down") setHealth({ state: "down", detail: ev.error });
    paintStream(s);
  }
}

async function stop() {
  const s = state.conv && state.streams.get(state.conv.id);
  if (!s) return;
  // Tell the server first so it saves the partial answer as stopped; the abort is the fallback.
  await fetch(`/api/conversations/${s.cid}/stop`, { method: "POST" }).catch(() => {});
}

// ---------------------------------------------------------------- uploads
function uploadError(status, message) {
  // The server's words are English; the user gets their own language, and the detail on hover.
  if (status === 413 || /larger than|too large|too big/i.test(message)) return t("uploadTooBig");
  if (/unsupported file type/i.test(message)) return t("uploadType");
  if (/no text|empty/i.test(message)) return t("uploadEmpty");
  return t("uploadFailed");
}

async function upload(file) {
  const conv = await ensureConversation();
  const chip = document.createElement("span");
  chip.className = "chip";
  chip.textContent = t("uploading", { name: file.name });
  $("#docs").append(chip);
  let status = 0;
  try {
    const res = await fetch(`/api/conversations/${conv.id}/documents`, {
      method: "POST",
      headers: { "x-filename": encodeURIComponent(file.name), "content-type": "application/octet-stream" },
      body: file,
    });
    status = res.status;
    const b = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(b.error ? b.error.message : res.statusText);
    chip.remove();
    if (state.conv && state.conv.id === conv.id) await openConversation(conv.id);
  } catch (e) {
    chip.className = "chip bad";
    chip.setAttribute("role", "alert");
    chip.title = e.message;
    const text = document.createElement("span");
    text.textContent = file.name + ": " + uploadError(status, e.message);
    const rm = document.createElement("button");
    rm.type = "button";
    rm.textContent = "✕";
    rm.setAttribute("aria-label", t("dismiss"));
    rm.addEventListener("click", () => chip.remove());
    chip.replaceChildren(text, rm);
  }
}

// ---------------------------------------------------------------- status chip
// One compact line (state · model · n/limit); the details, in plain words, on hover.
function setSessions(s) {
  state.sessions = s;
  renderChip();
}

function setHealth(h) {
  state.health = { ...(state.health || {}), ...h };
  renderChip();
  schedulePoll();
}

function renderChip() {
  const el = $("#backend");
  const st = state.status;
  const h = state.health || {};
  const b = (st && st.backend) || state.lastBackend;
  const sess = state.sessions || (st && st.sessions);
  const kind = h.state === "ok" ? "ok" : h.state === "loading" ? "loading"
    : h.state === "down" || h.state === "error" ? "bad" : "finding";
  el.dataset.state = kind;
  el.classList.toggle("bad", kind === "bad");
  const parts = [kind === "ok" ? t("connected") : kind === "loading" ? t("chipLoading")
    : h.state === "error" ? t("chipError") : kind === "bad" ? t("chipDown") : t("finding")];
  const model = st && st.model;
  if (kind === "ok" && model) parts.push(model);
  if (sess) {
    parts.push(`${sess.active}/${sess.limit}` + (sess.queued ? " · " + t("queuedN", { n: sess.queued }) : ""));
    el.dataset.active = sess.active;
    el.dataset.queued = sess.queued;
    el.dataset.limit = sess.limit;
  }
  el.querySelector(".label").textContent = parts.join(" · ");
  const url = b ? b.base_url : st && st.backend_url;
  if (b) {
    el.dataset.how = b.how;
    el.dataset.url = b.base_url;
  }
  const lines = [];
  if (url) lines.push(t("tipBackend", { url }) + (b ? " (" + t("how_" + b.how) + ")" : ""));
  lines.push(t("tipState_" + (h.state || "finding")) + (h.detail && kind === "bad" ? ": " + h.detail : ""));
  if (model) lines.push(t("tipModel", { model }));
  if (sess) lines.push(t("sessions", sess));
  const lib = st && st.library;
  if (lib) lines.push(lib.documents ? t("tipLibrary", { n: lib.documents }) : t("libraryEmptyShort"));
  el.title = lines.join("\n");
  el.setAttribute("aria-label", parts.join(", ") + ". " + lines.join(". "));
}

async function pollStatus() {
  try {
    const st = await api("/api/status");
    state.status = st;
    state.sessions = st.sessions;
    state.health = st.health || { state: "finding" };
    if (st.default_mode && st.default_mode !== state.defaultMode && !state.modeChosen) {
      state.defaultMode = st.default_mode;
      if (!state.conv) $("#mode").value = st.default_mode;
    }
    renderChip();
    updateLibraryNote();
  } catch (e) { /* the front end itself restarting; try again on the next tick */ }
  schedulePoll();
}

function schedulePoll() {
  // Quick while something changes (an answer streaming, the back end loading or away), slow when calm.
  const h = state.health ? state.health.state : "finding";
  const s = state.sessions;
  const busy = state.streams.size > 0 || h !== "ok" || (s && (s.active > 0 || s.queued > 0));
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(pollStatus, busy ? 1500 : 10000);
}

function updateLibraryNote() {
  // Customer service answers only from the library: say so when there is none.
  const lib = state.status && state.status.library;
  const empty = !!lib && !lib.documents;
  $("#library-note").hidden = !(empty && $("#mode").value === "service");
}

// ---------------------------------------------------------------- settings (admin)
async function openSettings() {
  const { data, admin } = await api("/api/modes");
  $("#admin-note").textContent = admin ? t("adminYes") : t("adminOnly");
  const box = $("#prompt-editors");
  box.replaceChildren();
  for (const m of data) {
    const fs = document.createElement("fieldset");
    const lg = document.createElement("legend");
    lg.textContent = t("mode_" + m.id);
    const ta = document.createElement("textarea");
    ta.id = "prompt-" + m.id;
    ta.value = m.prompt;
    ta.disabled = !admin;
    ta.setAttribute("aria-label", t("mode_" + m.id));
    const row = document.createElement("div");
    row.className = "row";
    const save = document.createElement("button");
    save.type = "button";
    save.className = "save";
    save.textContent = t("save");
    save.disabled = !admin;
    save.addEventListener("click", async () => {
      await api("/api/modes/" + m.id, { method: "PUT", body: JSON.stringify({ prompt: ta.value }) });
      save.textContent = t("saved");
    });
    const reset = document.createElement("button");
    reset.type = "button";
    reset.className = "reset";
    reset.textContent = t("reset");
    reset.disabled = !admin;
    reset.addEventListener("click", async () => {
      const r = await api("/api/modes/" + m.id, { method: "DELETE" });
      ta.value = r.prompt;
      save.textContent = t("save");  // "Saved" would now describe text that is gone
    });
    ta.addEventListener("input", () => { save.textContent = t("save"); });
    row.append(save, reset);
    fs.append(lg, ta, row);
    box.append(fs);
  }
  const lib = state.status && state.status.library;
  $("#library").textContent = lib && lib.docs_dir ? t("library", { dir: lib.docs_dir, files: lib.files }) : t("noLibrary");
  $("#rescan").disabled = !admin || !(lib && lib.docs_dir);
  const dlg = $("#settings");
  dlg.showModal();
  // Open at the top: the heading, not the first text box (whose focus would scroll the dialog).
  $("#settings-title").focus();
  box.scrollTop = 0;
  for (const ta of box.querySelectorAll("textarea")) { ta.scrollTop = 0; ta.setSelectionRange(0, 0); }
}

// ---------------------------------------------------------------- sidebar (narrow screens)
function sidebarOpen() {
  return $("#sidebar").classList.contains("open");
}

function openSidebar() {
  // The drawer starts below the top bar, so ☰ stays visible and closes it again.
  document.documentElement.style.setProperty("--topbar-h", $(".topbar").getBoundingClientRect().bottom + "px");
  $("#sidebar").classList.add("open");
  $("#backdrop").hidden = false;
  $("#toggle-sidebar").setAttribute("aria-expanded", "true");
  $("#search").focus();
}

function closeSidebar() {
  $("#sidebar").classList.remove("open");
  $("#backdrop").hidden = true;
  $("#toggle-sidebar").setAttribute("aria-expanded", "false");
}

// ---------------------------------------------------------------- wiring
function init() {
  $("#composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const ta = $("#prompt");
    const text = ta.value.trim();
    if (!text) return;
    if (state.conv && state.streams.has(state.conv.id)) { notice(t("busyHere")); return; }
    ta.value = "";
    send(text, false);
  });
  $("#prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {  // isComposing: Chinese IME confirms with Enter
      e.preventDefault();
      $("#composer").requestSubmit();
    }
  });
  $("#prompt").addEventListener("input", () => notice(""));
  $("#stop").addEventListener("click", stop);
  $("#regenerate").addEventListener("click", () => send("", true));
  $("#new-chat").addEventListener("click", newChat);
  $("#search").addEventListener("input", () => refreshList());
  $("#file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    e.target.value = "";
    if (f) upload(f);
  });
  $("#mode").addEventListener("change", async (e) => {
    state.defaultMode = e.target.value;
    state.modeChosen = true;
    updateLibraryNote();
    if (state.conv) {
      state.conv.mode = e.target.value;
      await api("/api/conversations/" + state.conv.id, { method: "PATCH", body: JSON.stringify({ mode: e.target.value }) });
    }
  });
  $("#toggle-sidebar").addEventListener("click", () => (sidebarOpen() ? closeSidebar() : openSidebar()));
  $("#backdrop").addEventListener("click", closeSidebar);
  $("#open-settings").addEventListener("click", openSettings);
  $("#rescan").addEventListener("click", async () => {
    const r = await api("/api/library/rescan", { method: "POST" });
    $("#library").textContent = t("library", { dir: r.docs_dir || "-", files: r.files });
    pollStatus();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && sidebarOpen()) { e.preventDefault(); closeSidebar(); $("#toggle-sidebar").focus(); }
    else if (e.key === "Escape" && state.conv && state.streams.has(state.conv.id)) { e.preventDefault(); stop(); }
    else if ((e.ctrlKey || e.metaKey) && e.shiftKey && (e.key === "O" || e.key === "o")) { e.preventDefault(); newChat(); }
    else if ((e.ctrlKey || e.metaKey) && (e.key === "k" || e.key === "K")) { e.preventDefault(); $("#search").focus(); }
  });
  // Back/forward and pasted links move between conversations without a reload.
  window.addEventListener("hashchange", () => {
    const h = /c=([0-9a-f]+)/.exec(location.hash);
    if (h && (!state.conv || state.conv.id !== h[1])) openConversation(h[1]);
  });
  const m = /c=([0-9a-f]+)/.exec(location.hash);
  if (m) openConversation(m[1]);
  else refreshList();
  renderChip();
  pollStatus();
  document.body.dataset.ready = "1";
}

init();
