// Clawdbot web chat: the status chip. Plain scripts sharing one scope (no build step); app.js wires them.
"use strict";

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
  const pending = pendingBackends(st);
  if (pending.total) parts.push(t("pendingChip", { n: pending.total }));
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
  lines.push(...pending.sentences);
  el.title = lines.join("\n");
  el.setAttribute("aria-label", parts.join(", ") + ". " + lines.join(". "));
  renderPending(pending, !!(st && st.admin));
}

// Servers found on the network whose key nobody has accepted (new) or whose key is not the one
// pinned for their name (changed): none is used until an admin decides on /admin/backends.
function pendingBackends(st) {
  const list = (st && st.backends) || [];
  const fresh = list.filter((c) => c.state === "new").length;
  const changed = list.filter((c) => c.state === "changed").length;
  const sentences = [];
  if (fresh) sentences.push(fresh === 1 ? t("pendingNew") : t("pendingNewN", { n: fresh }));
  if (changed) sentences.push(changed === 1 ? t("pendingChanged") : t("pendingChangedN", { n: changed }));
  return { total: fresh + changed, sentences };
}

function renderPending(pending, admin) {
  const note = $("#pending-note");
  note.hidden = !pending.total;
  note.querySelector(".text").textContent = pending.sentences.join(" ");
  const link = note.querySelector(".review");
  link.hidden = !(pending.total && admin);  // only an admin can accept; others are told it waits for one
  link.textContent = t("pendingReview");
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
