// Clawdbot web chat. Plain DOM, no framework, no build step.
// Model output is untrusted: it goes Markdown -> HTML (raw HTML escaped, images
// dropped) -> DOMPurify -> the page. Nothing the model writes runs as script.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  conv: null,          // the open conversation {id, title, mode, ...}
  list: [],            // conversations in the sidebar
  streaming: null,     // {cid, controller} while an answer streams
  defaultMode: "service",
  status: null,
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
  },
});

const PURIFY = {
  ALLOWED_TAGS: ["p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "input", "span"],
  ALLOWED_ATTR: ["href", "title", "class", "type", "checked", "disabled", "start", "align"],
  ALLOW_DATA_ATTR: false,
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
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

function setState(el, status, error) {
  el.dataset.state = status;
  const st = el.querySelector(".state");
  st.textContent = status === "queued" ? t("queued", { n: el.dataset.position || "?" })
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
    errEl.textContent = t("errorKept", { msg: error });
  } else if (errEl) errEl.remove();
}

function setSources(el, sources) {
  el.querySelector(".sources")?.remove();
  if (!sources.length) return;
  const det = document.createElement("details");
  det.className = "sources";
  det.open = true;
  const sum = document.createElement("summary");
  sum.textContent = t("sources");
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
    open.textContent = c.title || t("untitled");
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

async function renameConversation(c) {
  const title = prompt(t("renamePrompt"), c.title || "");
  if (title === null) return;
  await api("/api/conversations/" + c.id, { method: "PATCH", body: JSON.stringify({ title }) });
  if (state.conv && state.conv.id === c.id) {
    state.conv.title = title;
    $("#conv-title").textContent = title || t("untitled");
  }
  refreshList();
}

async function deleteConversation(c) {
  if (!confirm(t("deleteConfirm"))) return;
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
  updateButtons();
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
  const busy = !!(state.streaming && state.conv && state.streaming.cid === state.conv.id);
  $("#stop").disabled = !busy;
  $("#send").disabled = busy;
  const hasUser = !!document.querySelector("#messages .msg.user");
  $("#regenerate").disabled = busy || !hasUser;
}

// ---------------------------------------------------------------- sending
async function send(content, regenerate) {
  const conv = await ensureConversation();
  if (state.streaming) return;
  $("#empty").hidden = true;
  const box = $("#messages");
  if (regenerate) {
    // Drop the old answer from view; the server drops it from the store.
    const msgs = [...box.querySelectorAll(".msg")];
    while (msgs.length && !msgs[msgs.length - 1].classList.contains("user")) msgs.pop().remove();
  } else {
    box.append(messageEl({ role: "user", content }));
  }
  const el = messageEl({ role: "assistant", content: "", status: "streaming" });
  el.setAttribute("aria-busy", "true");  // screen readers announce the answer once, when complete
  box.append(el);
  scrollDown();
  const controller = new AbortController();
  state.streaming = { cid: conv.id, controller };
  updateButtons();
  let text = "";
  let pending = false;
  let finished = false;
  const paint = () => {
    pending = false;
    if (finished) return;  // a frame queued before the end must not undo the final render
    renderMarkdown(el.querySelector(".body"), text, false);
    setState(el, el.dataset.state);
    scrollDown();
  };
  try {
    const res = await fetch(`/api/conversations/${conv.id}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(regenerate ? { regenerate: true } : { content }),
      signal: controller.signal,
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
        const ev = JSON.parse(line.slice(5));
        if (ev.type === "begin") {
          el.dataset.id = ev.id;
          setSources(el, ev.sources || []);
          if (ev.title && !state.conv.title) {
            state.conv.title = ev.title;
            $("#conv-title").textContent = ev.title;
          }
          refreshList();
        } else if (ev.type === "queued") {
          el.dataset.position = ev.position;
          setState(el, "queued");
        } else if (ev.type === "start") {
          setState(el, "streaming");
          showBackend(ev.backend);
        } else if (ev.type === "retry") {
          el.querySelector(".state").textContent = t("retrying");
        } else if (ev.type === "delta") {
          text += ev.text;
          if (!pending) { pending = true; requestAnimationFrame(paint); }
        } else if (ev.type === "done" || ev.type === "stopped" || ev.type === "error") {
          finished = true;
          text = ev.content ?? text;
          renderMarkdown(el.querySelector(".body"), text, true);
          setState(el, ev.type, ev.error);
        }
      }
    }
  } catch (e) {
    finished = true;
    if (e.name !== "AbortError") {
      renderMarkdown(el.querySelector(".body"), text, true);
      setState(el, "error", e.message);
    }
  } finally {
    if (el.dataset.state === "streaming" || el.dataset.state === "queued") {
      finished = true;
      renderMarkdown(el.querySelector(".body"), text, true);
      setState(el, "stopped");
    }
    el.removeAttribute("aria-busy");
    state.streaming = null;
    updateButtons();
    refreshList();
    pollStatus();
  }
}

async function stop() {
  const s = state.streaming;
  if (!s) return;
  // Tell the server first so it saves the partial answer as stopped; the abort is the fallback.
  await fetch(`/api/conversations/${s.cid}/stop`, { method: "POST" }).catch(() => {});
}

// ---------------------------------------------------------------- uploads
async function upload(file) {
  const conv = await ensureConversation();
  const chip = document.createElement("span");
  chip.className = "chip";
  chip.textContent = t("uploading", { name: file.name });
  $("#docs").append(chip);
  try {
    const res = await fetch(`/api/conversations/${conv.id}/documents`, {
      method: "POST",
      headers: { "x-filename": encodeURIComponent(file.name), "content-type": "application/octet-stream" },
      body: file,
    });
    const b = await res.json();
    if (!res.ok) throw new Error(b.error ? b.error.message : res.statusText);
    chip.remove();
    await openConversation(conv.id);
    $("#backend").textContent = t("uploaded", { name: b.name, chunks: b.chunks });
  } catch (e) {
    chip.textContent = e.message;
    chip.classList.add("bad");
  }
}

// ---------------------------------------------------------------- status
function showBackend(b) {
  const el = $("#backend");
  const s = state.status ? state.status.sessions : null;
  if (!b) {
    // Before the first lookup ends (mDNS may wait fallback_timeout) this is "looking", not "none".
    el.textContent = t("finding");
    return;
  }
  el.classList.remove("bad");
  const how = t("how_" + b.how, { ms: state.status ? state.status.discovery.fallback_timeout : "" });
  el.textContent = t("backendVia", { url: b.base_url, how }) + (s ? " · " + t("sessions", s) : "");
  el.dataset.how = b.how;
  el.dataset.url = b.base_url;
}

async function pollStatus() {
  try {
    state.status = await api("/api/status");
    showBackend(state.status.backend);
  } catch (e) { /* the front end itself restarting; try again on the next tick */ }
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
    const save = document.createElement("button");
    save.type = "button";
    save.textContent = t("save");
    save.disabled = !admin;
    save.addEventListener("click", async () => {
      await api("/api/modes/" + m.id, { method: "PUT", body: JSON.stringify({ prompt: ta.value }) });
      save.textContent = t("saved");
    });
    const reset = document.createElement("button");
    reset.type = "button";
    reset.textContent = t("reset");
    reset.disabled = !admin;
    reset.addEventListener("click", async () => {
      const r = await api("/api/modes/" + m.id, { method: "DELETE" });
      ta.value = r.prompt;
    });
    fs.append(lg, ta, save, reset);
    box.append(fs);
  }
  const lib = state.status && state.status.library;
  $("#library").textContent = lib && lib.docs_dir ? t("library", { dir: lib.docs_dir, files: lib.files }) : t("noLibrary");
  $("#rescan").disabled = !admin;
  $("#settings").showModal();
}

// ---------------------------------------------------------------- sidebar (narrow screens)
function closeSidebar() {
  $("#sidebar").classList.remove("open");
  $("#toggle-sidebar").setAttribute("aria-expanded", "false");
}

// ---------------------------------------------------------------- wiring
function init() {
  $("#composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const ta = $("#prompt");
    const text = ta.value.trim();
    if (!text || state.streaming) return;
    ta.value = "";
    send(text, false);
  });
  $("#prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {  // isComposing: Chinese IME confirms with Enter
      e.preventDefault();
      $("#composer").requestSubmit();
    }
  });
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
    if (state.conv) {
      state.conv.mode = e.target.value;
      await api("/api/conversations/" + state.conv.id, { method: "PATCH", body: JSON.stringify({ mode: e.target.value }) });
    }
  });
  $("#toggle-sidebar").addEventListener("click", () => {
    const open = $("#sidebar").classList.toggle("open");
    $("#toggle-sidebar").setAttribute("aria-expanded", String(open));
    if (open) $("#search").focus();
  });
  $("#open-settings").addEventListener("click", openSettings);
  $("#rescan").addEventListener("click", async () => {
    const r = await api("/api/library/rescan", { method: "POST" });
    $("#library").textContent = t("library", { dir: r.docs_dir || "-", files: r.files });
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.streaming) { e.preventDefault(); stop(); }
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
  pollStatus();
  // A slow poll: enough to notice a re-discovered back end, negligible on the box's CPU.
  setInterval(pollStatus, 10000);
  document.body.dataset.ready = "1";
}

init();
