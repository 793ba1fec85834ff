"""Lexical retrieval over document chunks: SQLite FTS5, Chinese segmented by jieba.

Why this and not embeddings: on a 4-core, 16 GB NUC with no GPU an embedding
model means torch (hundreds of MB) in the front end, or a round trip to the
shared server for every chunk. FTS5 is built into SQLite, and jieba gives it
real Chinese words. The choice was measured (hit@3 on a zh+en question set,
see docs/frontend.md and tests/frontend/retrieval_bench.py).

jieba's full dictionary costs ~70 MB of RSS, half the front end's budget.
We load a trimmed copy instead: the most frequent words of jieba's own
dictionary (built once into the data dir), and jieba's HMM still segments
words the trimmed dictionary lacks. The measurement covers both.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SMALL_DICT_WORDS = 60_000

_STOP_TEXT = """的 了 是 吗 呢 吧 啊 我 我们 你 你们 他 她 它 这 那 这个 那个 什么 怎么 怎样 如何 哪些 哪个 多少 有 在 和 与 及
    或 就 都 也 要 会 能 可以 请问 请 一下 为什么 一个 之 对 把 被 给 让 从 到 中 上 下
    a an the is are was were be been do does did of to in on for and or with at by from what which who how
    when where why can could should would will i we you it its this that these those my our your me us there
    any please about
    在吗 你好 您好 谢谢 好的 hello hi hey thanks thank ok okay yes no"""
STOPWORDS = frozenset(_STOP_TEXT.split())
RELATIVE_FLOOR = 0.5  # hits scoring under this share of the best hit are dropped

_WORD = re.compile(r"[\w]+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


class Segmenter:
    """Text -> search terms. ``kind``: "jieba" (trimmed dict), "jieba-full", "bigram", "none"."""

    def __init__(self, kind: str = "jieba", cache_dir: str | Path | None = None) -> None:
        self.kind = kind
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._tok: Any = None
        self._lock = threading.Lock()

    def _tokenizer(self) -> Any:
        with self._lock:
            if self._tok is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                if self.kind == "jieba-full":
                    tok = jieba.Tokenizer()
                else:
                    tok = jieba.Tokenizer(dictionary=str(self._small_dict()))
                if self.cache_dir:
                    tok.tmp_dir = str(self.cache_dir)
                tok.initialize()
                self._tok = tok
            return self._tok

    def _small_dict(self) -> Path:
        import jieba

        base = self.cache_dir or Path.home() / ".cache" / "clawlan"
        base.mkdir(parents=True, exist_ok=True)
        path = base / f"jieba-top{SMALL_DICT_WORDS}.txt"
        if not path.exists():
            src = Path(jieba.__file__).with_name("dict.txt")
            rows = [line.split(" ") for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
            rows.sort(key=lambda r: -int(r[1]))
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(" ".join(r) + "\n" for r in rows[:SMALL_DICT_WORDS]), encoding="utf-8")
            tmp.replace(path)
        return path

    def words(self, text: str) -> list[str]:
        text = text.lower()
        if self.kind == "none":
            return _WORD.findall(text)
        if self.kind == "bigram":
            out: list[str] = []
            for w in _WORD.findall(text):
                if _CJK.search(w):
                    out.extend(w[i : i + 2] for i in range(max(1, len(w) - 1)))
                else:
                    out.append(w)
            return out
        tok = self._tokenizer()
        return [w for w in tok.cut_for_search(text, HMM=True) if _WORD.fullmatch(w)]

    def index_text(self, text: str) -> str:
        return " ".join(self.words(text))

    def query_terms(self, text: str) -> list[str]:
        words = self.words(text)
        # Only function words ("Are you there?", "What can you do?"): nothing to look up. Searching
        # them anyway matched policies at random and the page cited them.
        kept = [w for w in words if w not in STOPWORDS]
        seen: dict[str, None] = {}
        for w in kept:
            seen.setdefault(w, None)
        return list(seen)


@dataclass
class Hit:
    chunk_id: int
    doc_id: int
    doc_name: str
    ord: int
    text: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "doc": self.doc_name,
            "ord": self.ord,
            "text": self.text,
            "score": round(self.score, 3),
        }


SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms USING fts5(terms, tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS chunks_gone AFTER DELETE ON chunks BEGIN
    DELETE FROM chunk_terms WHERE rowid = old.id;
END;
"""


class Index:
    """Chunks of the ``documents`` table, searchable. Shares the store's connection and lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock, segmenter: Segmenter) -> None:
        self.db = db
        self.lock = lock
        self.seg = segmenter
        with self.lock:
            self.db.executescript(SCHEMA)

    def add(self, doc_id: int, chunks: list[str]) -> None:
        # Segment outside the lock: jieba is the slow part and other requests need the DB.
        rows = [(i, c, self.seg.index_text(c)) for i, c in enumerate(chunks)]
        with self._transaction():
            self._insert(doc_id, rows)

    def add_document(self, store: Any, chunks: list[str], **doc: Any) -> int:
        """Write a document row and its chunks in one transaction: a failure leaves neither behind."""
        rows = [(i, c, self.seg.index_text(c)) for i, c in enumerate(chunks)]
        with self._transaction():
            doc_id = store.add_document(**doc)  # the same connection and (reentrant) lock: inside this BEGIN
            self._insert(doc_id, rows)
        return doc_id

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT under the lock; any failure, a cancel included, rolls all of it back."""
        with self.lock:
            self.db.execute("BEGIN")
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _insert(self, doc_id: int, rows: list[tuple[int, str, str]]) -> None:
        for i, c, terms in rows:
            cur = self.db.execute("INSERT INTO chunks(doc_id, ord, text) VALUES (?,?,?)", (doc_id, i, c))
            self.db.execute("INSERT INTO chunk_terms(rowid, terms) VALUES (?,?)", (cur.lastrowid, terms))

    def search(self, query: str, doc_ids: list[int], k: int = 3) -> list[Hit]:
        if not doc_ids:
            return []
        terms = self.seg.query_terms(query)
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        marks = ",".join("?" * len(doc_ids))
        sql = (
            "SELECT c.id, c.doc_id, d.name, c.ord, c.text, bm25(chunk_terms) AS score "
            "FROM chunk_terms JOIN chunks c ON c.id = chunk_terms.rowid JOIN documents d ON d.id = c.doc_id "
            f"WHERE chunk_terms MATCH ? AND c.doc_id IN ({marks}) ORDER BY score LIMIT ?"
        )
        with self.lock:
            rows = self.db.execute(sql, (match, *doc_ids, k)).fetchall()
        hits = [Hit(r[0], r[1], r[2], r[3], r[4], -float(r[5])) for r in rows]
        # A relevance floor relative to the best hit: BM25's absolute scores vary with the library,
        # but a hit scoring under half the best one matched a stray word (on the test questions the
        # right snippet scores at least 0.78 of the best).
        return [h for h in hits if h.score >= RELATIVE_FLOOR * hits[0].score] if hits else []

    def first_chunks(self, doc_ids: list[int], k: int = 2) -> list[Hit]:
        """When a question shares no word with the document ("summarise this"), its opening is the best guess."""
        if not doc_ids:
            return []
        marks = ",".join("?" * len(doc_ids))
        with self.lock:
            rows = self.db.execute(
                "SELECT c.id, c.doc_id, d.name, c.ord, c.text FROM chunks c JOIN documents d ON d.id=c.doc_id "
                f"WHERE c.doc_id IN ({marks}) ORDER BY c.doc_id DESC, c.ord LIMIT ?",
                (*doc_ids, k),
            ).fetchall()
        return [Hit(r[0], r[1], r[2], r[3], r[4], 0.0) for r in rows]
