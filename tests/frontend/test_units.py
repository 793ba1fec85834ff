"""Unit tests of the front end's parts: extraction, chunking, retrieval quality, sessions, store, kiosk flags."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path

import pytest
from tests.frontend import retrieval_bench

from clawlan.errors import InvalidRequest
from clawlan.frontend import documents
from clawlan.frontend.command import KIOSK_FLAGS, kiosk_command
from clawlan.frontend.retrieval import Index, Segmenter
from clawlan.frontend.sessions import SessionLimiter
from clawlan.frontend.store import Store

DATA = Path(__file__).with_name("data")


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF with ``text`` in Helvetica, written by hand (no PDF writer needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref))
    return out.getvalue()


def test_extract_pdf_docx_and_text() -> None:
    assert "Refunds within seven days" in documents.extract("policy.pdf", tiny_pdf("Refunds within seven days"))
    import docx

    d = docx.Document()
    d.add_paragraph("年假五天")
    t = d.add_table(rows=1, cols=2)
    t.rows[0].cells[0].text = "病假"
    t.rows[0].cells[1].text = "十天"
    buf = io.BytesIO()
    d.save(buf)
    text = documents.extract("制度.docx", buf.getvalue())
    assert "年假五天" in text and "病假 | 十天" in text
    assert documents.extract("a.txt", "报销流程".encode("gb18030")) == "报销流程"  # GBK files from Windows
    assert documents.extract("a.md", b"# Title\n\nbody") == "# Title\n\nbody"


@pytest.mark.parametrize("name,data,msg", [
    ("x.exe", b"MZ", "unsupported file type"),
    ("empty.txt", b"   ", "no text found"),
    ("broken.pdf", b"%PDF-1.4 garbage", "cannot read"),
])
def test_extract_errors_are_one_line(name: str, data: bytes, msg: str) -> None:
    with pytest.raises(InvalidRequest, match=msg):
        documents.extract(name, data)


def test_chunk_sizes_and_overlap() -> None:
    text = "。".join(f"第{i}条规定的内容比较长需要切分" for i in range(100)) + "。"
    chunks = documents.chunk(text, size=120, overlap=30)
    assert all(len(c) <= 120 + 31 for c in chunks)
    assert len(chunks) > 5
    joined = "".join(chunks)
    assert all(f"第{i}条" in joined for i in range(100))  # nothing lost
    assert documents.chunk("short\n\nparas\n\nmerge", size=300) == ["short\n\nparas\n\nmerge"]


@pytest.mark.parametrize("kind", ["jieba", "bigram"])
def test_retrieval_hit_at_3(kind: str) -> None:
    """The question set of docs/frontend.md: both light candidates find >= 90% of answers in the top 3."""
    res = retrieval_bench.evaluate(kind, 300)
    assert res["hit@3"] >= 0.9, res["misses"]
    assert res["hit@3_zh"] >= 0.85 and res["hit@3_en"] >= 0.85


def test_chit_chat_cites_nothing_and_weak_hits_are_dropped(tmp_path: Path) -> None:
    """Issue 14 item 9: "Are you there?" cited shipping policies; stray one-word matches were listed as sources."""
    from clawlan.frontend.retrieval import RELATIVE_FLOOR

    store = Store(tmp_path / "s.sqlite3")
    index = Index(store.db, store.lock, Segmenter("jieba", cache_dir=tmp_path))
    ids = []
    for path in sorted(DATA.glob("library/*")):
        doc = store.add_document(path.name, 0)
        index.add(doc, documents.chunk(documents.extract(path.name, path.read_bytes())))
        ids.append(doc)
    for q in ("Are you there?", "What can you do?", "Who are you?", "在吗？", "你好", "Thanks!"):
        assert index.search(q, ids) == [], q
    hits = index.search("Can you deliver my order to Singapore?", ids)
    assert "Singapore" in hits[0].text
    assert all(h.score >= RELATIVE_FLOOR * hits[0].score for h in hits) and len(hits) < 3


def test_index_scopes_by_document(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    index = Index(store.db, store.lock, Segmenter("jieba", cache_dir=tmp_path))
    a = store.add_document("a.md", 10)
    b = store.add_document("b.md", 10)
    index.add(a, ["员工每年享有五天带薪年假"])
    index.add(b, ["带薪年假申请流程"])
    assert [h.doc_id for h in index.search("年假有几天", [a])] == [a]
    assert {h.doc_id for h in index.search("年假", [a, b])} == {a, b}
    store.delete_document(a)  # chunks and their index rows go with it
    assert [h.doc_id for h in index.search("年假", [a, b])] == [b]
    assert index.search("", [b]) == []


def test_a_failed_index_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "s.sqlite3")
    index = Index(store.db, store.lock, Segmenter("bigram", cache_dir=tmp_path))
    real_insert = Index._insert

    def insert_then_fail(self: Index, doc_id: int, rows: list[tuple[int, str, str]]) -> None:
        real_insert(self, doc_id, rows)  # the chunks are written, then the write fails
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Index, "_insert", insert_then_fail)
    with pytest.raises(sqlite3.OperationalError):
        index.add_document(store, ["年假五天"], name="a.md", chars=4)
    kept = store.add_document("b.md", 4)
    with pytest.raises(sqlite3.OperationalError):
        index.add(kept, ["带薪年假"])
    # Neither the failed document's row nor any chunk stays; the lock is free for the next write.
    assert [d["name"] for d in store.documents(None)] == ["b.md"]
    assert store.db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
    monkeypatch.setattr(Index, "_insert", real_insert)
    index.add(kept, ["带薪年假"])
    assert [h.doc_id for h in index.search("年假", [kept])] == [kept]


def test_session_limiter_fifo_and_cancel() -> None:
    async def run() -> None:
        lim = SessionLimiter(2)
        t1, t2, t3, t4 = (lim.ticket() for _ in range(4))
        assert t1.granted and t2.granted and not t3.granted and not t4.granted
        assert (t3.position, t4.position) == (1, 2)
        waiter = asyncio.ensure_future(t3.wait())
        await asyncio.sleep(0)
        waiter.cancel()  # t3's client leaves the queue
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert t4.position == 1
        assert await t4.wait_up_to(0.01) is False  # still in line: the caller may refresh its place
        t1.release()
        assert await t4.wait_up_to(1.0) is True
        assert t4.granted and lim.snapshot() == {"limit": 2, "active": 2, "queued": 0}
        t2.release()
        t4.release()
        t4.release()  # idempotent
        assert lim.active == 0

    asyncio.run(run())


def test_store_marks_crashed_streams_interrupted(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite3")
    c = s.create_conversation("t", "service")
    mid = s.add_message(c["id"], "assistant", "", status="streaming")
    s.update_message(mid, content="partial text")
    s.db.close()  # a crash: no clean shutdown
    s2 = Store(tmp_path / "db.sqlite3")
    m = s2.messages(c["id"])[0]
    assert (m["content"], m["status"]) == ("partial text", "interrupted")
    assert s2.conversations("partial")[0]["id"] == c["id"]
    assert s2.conversations("100%") == []  # LIKE wildcards are escaped


def test_kiosk_flags_follow_render_mode() -> None:
    hw = kiosk_command("http://127.0.0.1:8081/", "hardware_accelerated", browser="/usr/bin/chromium")
    sw = kiosk_command("http://127.0.0.1:8081/", "software", browser="/usr/bin/chromium")
    assert "--kiosk" in hw and "--app=http://127.0.0.1:8081/" in hw
    assert "--ignore-gpu-blocklist" in hw and "--disable-gpu" not in hw
    assert "--disable-gpu" in sw and "--enable-gpu-rasterization" not in sw
    assert set(KIOSK_FLAGS) == {"hardware_accelerated", "software"}


def test_question_set_is_bilingual() -> None:
    qs = json.loads((DATA / "retrieval_questions.json").read_text("utf-8"))["questions"]
    assert {q["lang"] for q in qs} == {"zh", "en"} and len(qs) >= 20


def test_seed_config_files_drive_the_front_end(tmp_path: Path) -> None:
    """The seed's two files, exactly as it writes them, merge into the front end's settings."""
    import argparse

    from clawlan.cli import build_parser
    from clawlan.frontend.command import front_config

    (tmp_path / "clawbot_config.json").write_text(json.dumps(
        {"frontend": {"render_mode": "hardware_accelerated", "max_concurrent_sessions": 5}}))
    (tmp_path / "network_config.json").write_text(json.dumps({
        "backend": {"service_port": 8080, "max_connections": 100, "timeout_ms": 30000},
        "frontend": {"discovery_protocol": "mDNS", "fallback_timeout": 5000}}))
    args = build_parser().parse_args([
        "front", "--config", str(tmp_path / "clawbot_config.json"), "--config", str(tmp_path / "network_config.json"),
        "--max-sessions", "3",
    ])
    assert isinstance(args, argparse.Namespace)
    cfg = front_config(args)
    assert (cfg.discovery_protocol, cfg.fallback_timeout, cfg.render_mode) == ("mDNS", 5000, "hardware_accelerated")
    assert cfg.max_concurrent_sessions == 3  # the flag wins over the file


def test_front_config_is_the_frontend_settings_and_refuses_unknown_options() -> None:
    from pydantic import ValidationError

    from clawlan.config.settings import FrontendSection
    from clawlan.frontend.app import FrontConfig

    cfg = FrontConfig.from_settings(FrontendSection(port=8099, segmenter="bigram"), mdns_service_type="_x._tcp.local.")
    assert (cfg.port, cfg.segmenter, cfg.mdns_service_type) == (8099, "bigram", "_x._tcp.local.")
    # Options built in code: a misspelt one fails (a config file's only warns), and so does an out-of-range one.
    with pytest.raises(ValidationError):
        FrontConfig(static_backnd="http://127.0.0.1:9")
    with pytest.raises(ValidationError):
        FrontConfig(max_concurrent_sessions=0)


def test_front_end_imports_nothing_heavy() -> None:
    """The NUC process must never load the inference engine, numpy or torch (nor parsers before an upload)."""
    import subprocess
    import sys

    code = (
        "import sys, clawlan.cli; clawlan.cli.build_parser(); import clawlan.frontend.app;"
        "print(','.join(m for m in ('llama_cpp', 'numpy', 'torch', 'pypdf', 'docx', 'jieba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
