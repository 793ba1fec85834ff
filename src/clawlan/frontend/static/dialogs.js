// Clawdbot web chat: in-page dialogs and the prompts editor. Plain scripts sharing one scope (no build step); app.js wires them.
"use strict";

// ---------------------------------------------------------------- dialogs
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
    const save = button("save", t("save"), async () => {
      await api("/api/modes/" + m.id, { method: "PUT", body: JSON.stringify({ prompt: ta.value }) });
      save.textContent = t("saved");
    });
    save.disabled = !admin;
    const reset = button("reset", t("reset"), async () => {
      const r = await api("/api/modes/" + m.id, { method: "DELETE" });
      ta.value = r.prompt;
      save.textContent = t("save");  // "Saved" would now describe text that is gone
    });
    reset.disabled = !admin;
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
