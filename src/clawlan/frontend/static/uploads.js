// Clawdbot web chat: document uploads. Plain scripts sharing one scope (no build step); app.js wires them.
"use strict";

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
    const rm = button("", "✕", () => chip.remove());
    rm.setAttribute("aria-label", t("dismiss"));
    chip.replaceChildren(text, rm);
  }
}
