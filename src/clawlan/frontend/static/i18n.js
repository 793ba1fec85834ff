// UI strings in English and Chinese. Loaded synchronously at the end of <body>
// so the labels are translated before the first paint.
"use strict";
const I18N = {
  en: {
    skip: "Skip to message box", conversations: "Conversations", newChat: "New chat",
    search: "Search conversations", settings: "Prompts & library",
    shortcutsHelp: "Enter: send · Shift+Enter: new line · Esc: stop · Ctrl+Shift+O: new chat · Ctrl+K: search",
    menu: "Conversations", mode: "Mode", mode_service: "Customer service", mode_document: "Document analysis",
    mode_code: "Code assistant", finding: "Looking for the back end…",
    empty: "Ask a question. Answers come from this office's own model; nothing leaves the LAN.",
    message: "Message", placeholder: "Type a message (Enter to send)", upload: "Upload", regenerate: "Regenerate",
    stop: "Stop", send: "Send", settingsTitle: "System prompts", rescan: "Re-read docs folder", close: "Close",
    rename: "Rename", delete: "Delete", renamePrompt: "New name", deleteConfirm: "Delete this conversation?",
    untitled: "New chat", you: "You", assistant: "Assistant", queued: "Queued: number {n} in line — it starts when a slot frees",
    waiting: "Waiting for the first words…", stopped: "Stopped", errorKept: "Error: {msg}", retrying: "Back end did not answer; trying again…",
    sources: "Sources", copy: "Copy", copied: "Copied", download: "Download",
    backendVia: "Back end {url} · {how}", how_mDNS: "found by mDNS", how_static: "static address",
    how_fallback: "static fallback (no mDNS answer in {ms} ms)",
    sessions: "{active}/{limit} generating, {queued} queued",
    uploaded: "{name}: {chunks} chunks indexed", uploading: "Reading {name}…", removeDoc: "Remove {name}",
    save: "Save", reset: "Reset to default", saved: "Saved", adminOnly: "Only the admin (at this box, or with the admin token) can change prompts.",
    adminYes: "Edit the system prompt of each mode.", library: "Docs folder: {dir} · {files} files", noLibrary: "No docs folder configured (frontend.docs_dir).",
    interrupted: "Interrupted (the front end restarted); the text so far is kept.",
  },
  zh: {
    skip: "跳到输入框", conversations: "会话", newChat: "新对话", search: "搜索会话", settings: "提示词与资料库",
    shortcutsHelp: "Enter 发送 · Shift+Enter 换行 · Esc 停止 · Ctrl+Shift+O 新对话 · Ctrl+K 搜索",
    menu: "会话列表", mode: "模式", mode_service: "智能客服", mode_document: "文档分析", mode_code: "代码助手",
    finding: "正在寻找后端…", empty: "请输入问题。回答来自本单位自己的模型，数据不出局域网。",
    message: "消息", placeholder: "输入消息（Enter 发送）", upload: "上传文档", regenerate: "重新生成", stop: "停止", send: "发送",
    settingsTitle: "系统提示词", rescan: "重新读取资料目录", close: "关闭", rename: "重命名", delete: "删除",
    renamePrompt: "新名称", deleteConfirm: "删除这个会话？", untitled: "新对话", you: "你", assistant: "助手",
    queued: "排队中：第 {n} 位，有空位后自动开始", waiting: "等待回答…", stopped: "已停止", errorKept: "出错：{msg}",
    retrying: "后端无响应，正在重试…", sources: "引用来源", copy: "复制", copied: "已复制", download: "下载",
    backendVia: "后端 {url} · {how}", how_mDNS: "通过 mDNS 发现", how_static: "静态地址",
    how_fallback: "静态地址回退（{ms} 毫秒内无 mDNS 响应）",
    sessions: "{active}/{limit} 生成中，{queued} 排队", uploaded: "{name}：已索引 {chunks} 段", uploading: "正在读取 {name}…",
    removeDoc: "移除 {name}", save: "保存", reset: "恢复默认", saved: "已保存",
    adminOnly: "只有管理员（在本机上，或持有管理令牌）可以修改提示词。", adminYes: "编辑每种模式的系统提示词。",
    library: "资料目录：{dir} · {files} 个文件", noLibrary: "未配置资料目录（frontend.docs_dir）。",
    interrupted: "已中断（前端重启），已显示的内容已保留。",
  },
};
const LANG = /^zh/i.test((navigator.languages && navigator.languages[0]) || navigator.language || "") ? "zh" : "en";
function t(key, vars) {
  let s = (I18N[LANG] && I18N[LANG][key]) || I18N.en[key] || key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.split("{" + k + "}").join(String(v));
  return s;
}
document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
for (const el of document.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
