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
