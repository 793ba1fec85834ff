"""The seed's three use cases as chat modes, each with an admin-editable system prompt."""

from __future__ import annotations

import re
from dataclasses import dataclass

from clawlan.frontend.retrieval import Hit


@dataclass(frozen=True)
class Mode:
    id: str
    name_en: str
    name_zh: str
    retrieval: str  # "library" (admin's docs folder), "uploads" (this conversation's files) or ""
    default_prompt: str

    def to_json(self, prompt: str) -> dict[str, object]:
        return {
            "id": self.id,
            "name_en": self.name_en,
            "name_zh": self.name_zh,
            "retrieval": self.retrieval,
            "prompt": prompt,
            "default_prompt": self.default_prompt,
            "customised": prompt != self.default_prompt,
        }


# The prompts are bilingual on purpose: the users are mostly Chinese, and a
# small model follows the language of its instructions.
MODES: dict[str, Mode] = {
    m.id: m
    for m in (
        Mode(
            "general",
            "General assistant",
            "通用助手",
            "",
            "你是本单位的通用助手。回答要清楚、简洁；不确定时直接说明。用提问者的语言回答。\n"
            "You are this office's general assistant. Answer clearly and briefly, and say so when you are not sure.",
        ),
        Mode(
            "service",
            "Customer service",
            "智能客服",
            "library",
            "你是本公司的客服助手。只根据下面提供的参考资料回答，并用 [1]、[2] 这样的编号注明出处；"
            "资料中没有的内容，请说明不知道并建议联系人工客服。用提问者的语言回答。\n"
            "You are this company's customer-service assistant. Answer only from the reference snippets below "
            "and cite them as [1], [2]. If they do not contain the answer, say so and suggest a human agent.",
        ),
        Mode(
            "document",
            "Document analysis",
            "文档分析",
            "uploads",
            "你是文档分析助手。根据用户上传文档中检索到的片段回答问题，注明引用的片段编号 [1]、[2]；"
            "不要编造文档中没有的内容。用提问者的语言回答。\n"
            "You are a document-analysis assistant. Answer from the retrieved excerpts of the user's documents, "
            "cite them as [1], [2], and do not invent content that is not in them.",
        ),
        Mode(
            "code",
            "Code assistant",
            "代码助手",
            "",
            "你是编程助手。给出简洁、可运行的代码，放在带语言标注的 Markdown 代码块中，并简要说明。\n"
            "You are a coding assistant. Give concise, working code in fenced Markdown blocks tagged with their "
            "language, followed by a short explanation.",
        ),
    )
}
# Customer service answers only from the library, so it is the default only once a library exists
# (Frontend.default_mode); until then a new chat is a general assistant.
DEFAULT_MODE = "general"
LIBRARY_MODE = "service"


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def question_language(text: str) -> str:
    """"zh", "en", or "" (neither): what the question is mostly written in (a Chinese character weighs as a word)."""
    cjk = len(_CJK.findall(text))
    latin_words = len(re.findall(r"[A-Za-z]+", text))
    return "zh" if cjk and cjk >= latin_words else "en" if _LATIN.search(text) else ""


# Said right after the mode's prompt: the bilingual prompts open in Chinese, and without this an
# English question got a Chinese answer.
REPLY_IN = {"en": "Answer in English.", "zh": "请用中文回答。"}


def system_message(prompt: str, hits: list[Hit], question: str = "") -> str:
    """The system prompt, the numbered snippets the answer must cite, and the language to answer in."""
    lines = [prompt]
    lang = question_language(question)
    if lang:
        lines += ["", REPLY_IN[lang]]
    if hits:
        # The snippets come last: a base model continues whatever ends the prompt, and repeating a
        # snippet is less bad than repeating an instruction.
        lines += ["", "参考资料 / Reference snippets:"]
        for i, h in enumerate(hits, 1):
            lines.append(f"[{i}] ({h.doc_name}) {h.text}")
    return "\n".join(lines)
