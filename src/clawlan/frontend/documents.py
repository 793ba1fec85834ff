"""Turn an uploaded or admin-provided file into text, and the text into chunks.

Extraction is local (pypdf, python-docx, plain decoding): nothing leaves the
LAN. The parsers are imported on first use so a front end that never sees a
PDF never pays their memory.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from clawlan.errors import InvalidRequest

KINDS = {".pdf": "pdf", ".docx": "docx", ".txt": "text", ".md": "text", ".markdown": "text"}
MAX_BYTES = 20 * 1024 * 1024  # a NUC should not spend minutes on one upload


def kind_of(name: str) -> str:
    kind = KINDS.get(Path(name).suffix.lower())
    if kind is None:
        raise InvalidRequest(f"{name}: unsupported file type; upload PDF, DOCX, TXT or Markdown", param="file")
    return kind


def decode_text(data: bytes) -> str:
    # Chinese offices still write GB18030 (GBK) text files; try UTF-8 first since it fails loudly.
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def extract(name: str, data: bytes) -> str:
    """The text of a file, as one string with paragraphs separated by blank lines."""
    kind = kind_of(name)
    if len(data) > MAX_BYTES:
        raise InvalidRequest(f"{name}: larger than {MAX_BYTES // (1024 * 1024)} MB", param="file")
    try:
        if kind == "pdf":
            from pypdf import PdfReader

            reader = PdfReader(io.BytesIO(data))
            text = "\n\n".join((page.extract_text() or "") for page in reader.pages)
        elif kind == "docx":
            import docx

            d = docx.Document(io.BytesIO(data))
            parts = [p.text for p in d.paragraphs]
            for table in d.tables:
                for row in table.rows:
                    parts.append(" | ".join(cell.text for cell in row.cells))
            text = "\n\n".join(parts)
        else:
            text = decode_text(data)
    except InvalidRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken file is the user's to fix, not a crash
        raise InvalidRequest(f"{name}: cannot read this {kind.upper()} file ({type(exc).__name__}: {exc})") from None
    text = text.replace("\r\n", "\n").replace("\x00", "")
    if not text.strip():
        raise InvalidRequest(f"{name}: no text found (a scanned PDF needs OCR first)", param="file")
    return text


_SENT_END = re.compile(r"(?<=[。！？；!?;.])\s*")


def chunk(text: str, size: int = 300, overlap: int = 60) -> list[str]:
    """Split into pieces of about ``size`` characters along paragraph, then sentence, boundaries.

    Characters rather than tokens: Chinese and English differ by ~3x in
    characters per token, and the model's context is the back end's concern;
    300 characters is about one FAQ answer or policy clause: a precise snippet to
    cite, and three of them stay well under a 2048-token context.
    """
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces: list[str] = []
    for p in paras:
        if len(p) <= size:
            pieces.append(p)
            continue
        sentences = [s for s in _SENT_END.split(p) if s]
        buf = ""
        for s in sentences:
            while len(s) > size:  # one endless sentence (a table dump): cut hard
                if buf:
                    pieces.append(buf)
                    buf = ""
                pieces.append(s[:size])
                s = s[size - overlap:]
            if len(buf) + len(s) + 1 > size and buf:
                pieces.append(buf)
                # Carry the tail over so an answer split across the cut is still found.
                buf = buf[-overlap:] + " " + s if overlap else s
            else:
                buf = f"{buf} {s}" if buf else s
        if buf:
            pieces.append(buf)
    # Merge runs of short paragraphs (headings, list items) so a chunk carries context.
    out: list[str] = []
    for piece in pieces:
        if out and len(out[-1]) + len(piece) + 2 <= size:
            out[-1] = out[-1] + "\n\n" + piece
        else:
            out.append(piece)
    return out
