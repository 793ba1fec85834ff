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
    rename: "Rename", delete: "Delete", cancel: "Cancel", renamePrompt: "New name", deleteConfirm: "Delete this conversation?",
    untitled: "New chat", you: "You", assistant: "Assistant", queued: "Queued: number {n} in line — it starts when a slot frees",
    waiting: "Waiting for the first words…", stopped: "Stopped", errorKept: "Error: {msg}", retrying: "Back end did not answer; trying again…",
    sources: "Sources", sourcesN: "Sources ({n})", copy: "Copy", copied: "Copied", download: "Download",
    how_mDNS: "found on the network", how_static: "the configured address",
    how_fallback: "the configured address; none was found on the network",
    sessions: "{active} of {limit} answering now, {queued} waiting",
    uploading: "Reading {name}…", removeDoc: "Remove {name}",
    mode_general: "General assistant", modelLoading: "The model is loading… your message is sent as soon as it is ready.",
    backendDown: "The back end is not answering. Check that the clawlan server is running, then retry.",
    backendLost: "The back end stopped in the middle of the answer; the text so far is kept.",
    retry: "Retry", busyHere: "This chat is still answering: wait for it or press Stop. Other chats can be used meanwhile.",
    sendFailed: "Could not send: {msg}", dismiss: "Dismiss",
    uploadTooBig: "too large to read", uploadType: "not a PDF, Word (DOCX), text or Markdown file",
    uploadEmpty: "no text found in it", uploadFailed: "could not be read",
    connected: "Connected", chipLoading: "Model loading", chipDown: "Back end unreachable", chipError: "Model failed to load",
    queuedN: "{n} waiting", tipBackend: "Back end: {url}", tipModel: "Model: {model}",
    tipState_ok: "Ready", tipState_loading: "The model is still loading", tipState_down: "Not answering",
    tipState_error: "The model failed to load", tipState_finding: "Looking for the back end",
    tipLibrary: "Knowledge base: {n} documents", libraryEmptyShort: "Knowledge base: empty",
    libraryEmpty: "The knowledge base is empty: customer service answers only from the office's documents. An admin sets a docs folder (--docs-dir or frontend.docs_dir).",
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
    settingsTitle: "系统提示词", rescan: "重新读取资料目录", close: "关闭", rename: "重命名", delete: "删除", cancel: "取消",
    renamePrompt: "新名称", deleteConfirm: "删除这个会话？", untitled: "新对话", you: "你", assistant: "助手",
    queued: "排队中：第 {n} 位，有空位后自动开始", waiting: "等待回答…", stopped: "已停止", errorKept: "出错：{msg}",
    retrying: "后端无响应，正在重试…", sources: "引用来源", sourcesN: "引用来源（{n}）", copy: "复制", copied: "已复制", download: "下载",
    how_mDNS: "在局域网中自动发现", how_static: "配置的地址", how_fallback: "配置的地址；局域网中未发现后端",
    sessions: "{active}/{limit} 正在回答，{queued} 个在等待", uploading: "正在读取 {name}…",
    mode_general: "通用助手", modelLoading: "模型正在加载…加载完成后会自动发送你的消息。",
    backendDown: "后端没有响应。请确认 clawlan 服务器正在运行，然后重试。",
    backendLost: "后端在回答途中停止了；已显示的内容已保留。",
    retry: "重试", busyHere: "这个对话还在回答中：请等待或点“停止”。其间可以使用其他对话。",
    sendFailed: "发送失败：{msg}", dismiss: "关闭",
    uploadTooBig: "文件太大，无法读取", uploadType: "不是 PDF、Word（DOCX）、文本或 Markdown 文件",
    uploadEmpty: "文件中没有可读的文字", uploadFailed: "无法读取",
    connected: "已连接", chipLoading: "模型加载中", chipDown: "后端无法连接", chipError: "模型加载失败",
    queuedN: "{n} 个在等待", tipBackend: "后端：{url}", tipModel: "模型：{model}",
    tipState_ok: "就绪", tipState_loading: "模型仍在加载", tipState_down: "没有响应",
    tipState_error: "模型加载失败", tipState_finding: "正在寻找后端",
    tipLibrary: "资料库：{n} 个文档", libraryEmptyShort: "资料库：空",
    libraryEmpty: "资料库是空的：智能客服只根据本单位的资料回答。请管理员设置资料目录（--docs-dir 或 frontend.docs_dir）。",
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
