"""Conversations, messages, documents and admin prompts in one SQLite file.

SQLite is on every box, needs no server and survives power loss in WAL mode.
An assistant message is written when it starts and updated as it streams, so
a crash or restart loses nothing the user has already seen; one left
``streaming`` by a crash is marked ``interrupted`` on the next start.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    mode TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'done',
    error TEXT,
    sources TEXT,
    backend TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conv ON messages(conversation_id, id);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT REFERENCES conversations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    source TEXT,
    mtime REAL,
    size INTEGER,
    chars INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS prompts (
    mode TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    updated REAL NOT NULL
);
"""


class Store:
    """All persistent state. Methods are short and serialised by one lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Conversations are private: the file is the owner's only. SQLite gives its -wal and -shm files
            # the database file's mode, so creating this one 0600 covers all three.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.chmod(self.path + suffix, 0o600)  # files made by an older version were 0644
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable across process crashes; only an OS crash may lose the last commit.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            self.db.execute("UPDATE messages SET status='interrupted' WHERE status IN ('streaming', 'queued')")

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute(sql, args).fetchone()
        return dict(row) if row else None

    # -- conversations ------------------------------------------------------
    def create_conversation(self, title: str, mode: str) -> dict[str, Any]:
        now = time.time()
        cid = uuid.uuid4().hex[:16]
        with self.lock:
            self.db.execute(
                "INSERT INTO conversations(id, title, mode, created, updated) VALUES (?,?,?,?,?)",
                (cid, title, mode, now, now),
            )
        return self.conversation(cid)  # type: ignore[return-value]

    def conversation(self, cid: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM conversations WHERE id=?", (cid,))

    def conversations(self, query: str = "") -> list[dict[str, Any]]:
        if not query:
            return self._all("SELECT * FROM conversations ORDER BY updated DESC")
        like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return self._all(
            "SELECT * FROM conversations c WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS "
            "(SELECT 1 FROM messages m WHERE m.conversation_id=c.id AND m.content LIKE ? ESCAPE '\\') "
            "ORDER BY updated DESC",
            (like, like),
        )

    def update_conversation(self, cid: str, **fields: Any) -> dict[str, Any] | None:
        allowed = {k: v for k, v in fields.items() if k in ("title", "mode") and v is not None}
        if allowed:
            sets = ", ".join(f"{k}=?" for k in allowed)
            with self.lock:
                self.db.execute(f"UPDATE conversations SET {sets} WHERE id=?", (*allowed.values(), cid))
        return self.conversation(cid)

    def touch(self, cid: str) -> None:
        with self.lock:
            self.db.execute("UPDATE conversations SET updated=? WHERE id=?", (time.time(), cid))

    def delete_conversation(self, cid: str) -> bool:
        with self.lock:
            cur = self.db.execute("DELETE FROM conversations WHERE id=?", (cid,))
        return cur.rowcount > 0

    # -- messages -----------------------------------------------------------
    def add_message(
        self, cid: str, role: str, content: str, status: str = "done", sources: list[dict[str, Any]] | None = None
    ) -> int:
        with self.lock:
            cur = self.db.execute(
                "INSERT INTO messages(conversation_id, role, content, status, sources, created) VALUES (?,?,?,?,?,?)",
                (cid, role, content, status, json.dumps(sources, ensure_ascii=False) if sources else None, time.time()),
            )
            self.db.execute("UPDATE conversations SET updated=? WHERE id=?", (time.time(), cid))
        return int(cur.lastrowid or 0)

    def update_message(self, mid: int, **fields: Any) -> None:
        allowed = {}
        for k, v in fields.items():
            if k in ("content", "status", "error", "backend"):
                allowed[k] = v
            elif k == "sources":
                allowed[k] = json.dumps(v, ensure_ascii=False) if v else None
        if not allowed:
            return
        sets = ", ".join(f"{k}=?" for k in allowed)
        with self.lock:
            self.db.execute(f"UPDATE messages SET {sets} WHERE id=?", (*allowed.values(), mid))

    def messages(self, cid: str) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM messages WHERE conversation_id=? ORDER BY id", (cid,))
        for r in rows:
            r["sources"] = json.loads(r["sources"]) if r["sources"] else []
        return rows

    def delete_messages_from(self, cid: str, mid: int) -> None:
        """Drop message ``mid`` and everything after it (regenerate)."""
        with self.lock:
            self.db.execute("DELETE FROM messages WHERE conversation_id=? AND id>=?", (cid, mid))

    def delete_messages(self, cid: str, ids: list[int]) -> None:
        with self.lock:
            self.db.executemany("DELETE FROM messages WHERE conversation_id=? AND id=?", [(cid, i) for i in ids])

    # -- documents ----------------------------------------------------------
    def add_document(
        self, name: str, chars: int, conversation_id: str | None = None,
        source: str | None = None, mtime: float | None = None, size: int | None = None,
    ) -> int:
        with self.lock:
            cur = self.db.execute(
                "INSERT INTO documents(conversation_id, name, source, mtime, size, chars, created) VALUES (?,?,?,?,?,?,?)",
                (conversation_id, name, source, mtime, size, chars, time.time()),
            )
        return int(cur.lastrowid or 0)

    def documents(self, conversation_id: str | None) -> list[dict[str, Any]]:
        if conversation_id is None:
            return self._all("SELECT * FROM documents WHERE conversation_id IS NULL ORDER BY name")
        return self._all("SELECT * FROM documents WHERE conversation_id=? ORDER BY id", (conversation_id,))

    def document(self, doc_id: int) -> dict[str, Any] | None:
        return self._one("SELECT * FROM documents WHERE id=?", (doc_id,))

    def delete_document(self, doc_id: int) -> None:
        with self.lock:
            self.db.execute("DELETE FROM documents WHERE id=?", (doc_id,))

    # -- prompts ------------------------------------------------------------
    def prompt(self, mode: str) -> str | None:
        row = self._one("SELECT text FROM prompts WHERE mode=?", (mode,))
        return row["text"] if row else None

    def set_prompt(self, mode: str, text: str | None) -> None:
        with self.lock:
            if text is None:
                self.db.execute("DELETE FROM prompts WHERE mode=?", (mode,))
            else:
                self.db.execute(
                    "INSERT INTO prompts(mode, text, updated) VALUES (?,?,?) "
                    "ON CONFLICT(mode) DO UPDATE SET text=excluded.text, updated=excluded.updated",
                    (mode, text, time.time()),
                )
