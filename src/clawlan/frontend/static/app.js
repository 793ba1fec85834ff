// Clawdbot web chat. Plain DOM, no framework, no build step: classic scripts that share one
// scope, loaded in order (render, sidebar, uploads, status, dialogs, then this one, which wires
// them up and runs init()). This file: messages, answer streams, sending.
// Model output is untrusted: render.js turns it into HTML with raw HTML escaped, images and links
// as text, then DOMPurify. Nothing the model writes runs as script.
"use strict";

const $ = (sel) => document.querySelector(sel);
// A <button type="button"> (never a form's submit) with its class, text and click action; every
// script makes them, at run time, after this file has loaded.
function button(className, text, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  if (className) b.className = className;
  b.textContent = text;
  if (onClick) b.addEventListener("click", onClick);
  return b;
}
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
    errEl.replaceChildren(msg, button("retry", t("retry"), () => retryLast(el)));
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
  // The server saves a streaming answer as it goes; re-read it until it is finished.
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
