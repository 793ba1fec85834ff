// Clawdbot web chat: the conversation list and the phone drawer. Plain scripts sharing one scope (no build step); app.js wires them.
"use strict";

// ---------------------------------------------------------------- conversation list
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
    const open = button("open", "", () => openConversation(c.id));
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
    li.append(open, toolButton("rename", "✎", c, renameConversation), toolButton("delete", "✕", c, deleteConversation));
    ul.append(li);
  }
}

// The ✎ and ✕ beside a conversation: one look and labelling; `kind` is both the class and the label's key.
function toolButton(kind, glyph, c, action) {
  const b = button("tool " + kind, glyph, () => action(c));
  b.title = t(kind);
  b.setAttribute("aria-label", t(kind) + ": " + (c.title || t("untitled")));
  return b;
}

// Rename and delete alike: ask in a page dialog (null: cancelled), send the change, mend the
// conversation on screen when it is this one, redraw the list.
async function changeConversation(c, dialog, request, whenOpen) {
  const answer = await ask(dialog);
  if (answer === null) return;
  await api("/api/conversations/" + c.id, request(answer));
  if (state.conv && state.conv.id === c.id) whenOpen(answer);
  refreshList();
}

function renameConversation(c) {
  return changeConversation(
    c,
    { title: t("renamePrompt"), value: c.title || "", ok: t("save") },
    (title) => ({ method: "PATCH", body: JSON.stringify({ title }) }),
    (title) => {
      state.conv.title = title;
      $("#conv-title").textContent = title || t("untitled");
    },
  );
}

function deleteConversation(c) {
  return changeConversation(
    c,
    { title: t("deleteConfirm") + (c.title ? " " + c.title : ""), ok: t("delete"), danger: true },
    () => ({ method: "DELETE" }),
    () => newChat(),
  );
}

function showDocs(docs) {
  const box = $("#docs");
  box.replaceChildren();
  for (const d of docs || []) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = d.name;
    const rm = button("", "✕", async () => {
      await api(`/api/conversations/${state.conv.id}/documents/${d.id}`, { method: "DELETE" });
      openConversation(state.conv.id);
    });
    rm.setAttribute("aria-label", t("removeDoc", { name: d.name }));
    chip.append(rm);
    box.append(chip);
  }
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
