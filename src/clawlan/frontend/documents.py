"""Turn an uploaded or admin-provided file into text, and the text into chunks.

Extraction is local (pypdf, python-docx, plain decoding): nothing leaves the
LAN. The parsers are imported on first use so a front end that never sees a
PDF never pays their memory.

Every size is capped before it can cost memory: the upload's bytes (counted
while it streams in), a DOCX's decompressed size (read from the ZIP
directory before anything is inflated: a 52 KiB zip bomb can hold hundreds
of MB of XML) and the extracted text. Chunking is linear in the text.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

from clawlan.errors import InvalidRequest, RequestError

KINDS = {".pdf": "pdf", ".docx": "docx", ".txt": "text", ".md": "text", ".markdown": "text"}
MAX_BYTES = 20 * 1024 * 1024  # a NUC should not spend minutes on one upload
MAX_UNZIPPED = 64 * 1024 * 1024  # a DOCX's parts, inflated; real ones of 20 MB hold far less XML than this
MAX_TEXT_CHARS = 2_000_000  # about 1,000 pages: beyond that retrieval over one upload is meaningless


class TooLarge(RequestError):
    status_code = 413
    code = "file_too_large"


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
        raise TooLarge(f"{name}: larger than {MAX_BYTES // (1024 * 1024)} MB", param="file")
    try:
        if kind == "pdf":
            from pypdf import PdfReader

            reader = PdfReader(io.BytesIO(data))
            pages: list[str] = []
            total = 0
            for page in reader.pages:
                pages.append(page.extract_text() or "")
                total += len(pages[-1])
                if total > MAX_TEXT_CHARS:
                    break  # reported below, without extracting the remaining pages
            text = "\n\n".join(pages)
        elif kind == "docx":
            import docx

            check_zip(name, data)
            d = docx.Document(io.BytesIO(data))
            parts = [p.text for p in d.paragraphs]
            for table in d.tables:
                for row in table.rows:
                    parts.append(" | ".join(cell.text for cell in row.cells))
            text = "\n\n".join(parts)
        else:
            text = decode_text(data)
    except RequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken file is the user's to fix, not a crash
        raise InvalidRequest(f"{name}: cannot read this {kind.upper()} file ({type(exc).__name__}: {exc})") from None
    if len(text) > MAX_TEXT_CHARS:
        raise TooLarge(f"{name}: more than {MAX_TEXT_CHARS:,} characters of text; split it into smaller files",
                       param="file")
    text = text.replace("\r\n", "\n").replace("\x00", "")
    if not text.strip():
        raise InvalidRequest(f"{name}: no text found (a scanned PDF needs OCR first)", param="file")
    return text


def check_zip(name: str, data: bytes) -> None:
    """Refuse a ZIP (DOCX) whose parts inflate beyond :data:`MAX_UNZIPPED`.

    The sizes come from the central directory; zipfile never inflates a part
    past its declared size (it stops and fails the CRC), so the declared sum
    is a true bound on what parsing can allocate.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            total = sum(i.file_size for i in z.infolist())
    except zipfile.BadZipFile as exc:
        raise InvalidRequest(f"{name}: not a DOCX file ({exc})", param="file") from None
    if total > MAX_UNZIPPED:
        raise TooLarge(f"{name}: unpacks to {total // (1024 * 1024)} MB, more than the "
                       f"{MAX_UNZIPPED // (1024 * 1024)} MB allowed", param="file")


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
            if len(s) > size:  # one endless sentence (a table dump): cut hard
                if buf:
                    pieces.append(buf)
                    buf = ""
                # Step through by index: re-slicing the remainder each time copied it, quadratic in its length.
                step = max(size - overlap, 1)
                start = 0
                while len(s) - start > size:
                    pieces.append(s[start:start + size])
                    start += step
                s = s[start:]
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
