// Clawdbot web chat: model text to safe HTML, code blocks. Plain scripts sharing one scope (no build step); app.js wires them.
"use strict";

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
    const copy = button("copy", t("copy"), async () => {
      await copyText(code.textContent);
      copy.textContent = t("copied");
      setTimeout(() => { copy.textContent = t("copy"); }, 1500);
    });
    copy.setAttribute("aria-label", t("copy") + (lang ? " " + lang : ""));
    bar.append(copy);
    if (state.conv && state.conv.mode === "code") {
      const dl = button("download", t("download"), () => {
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
