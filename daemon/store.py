"""The result store: uuid -> the answer JSON, in SQLite (WAL), kept for a retention period.

Only successful answers are stored (decisions.md): a kiosk may retry a uuid after an error. A uuid that
already has an answer and arrives with other inputs (a different input hash) is a conflict. The
uploaded photos are stored only when `keep_photos` is on; the annotated photos are part of the answer.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import orjson

from daemon.answer import answer_json
from daemon.errors import AnalysisError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    uuid TEXT PRIMARY KEY,
    input_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    answer BLOB NOT NULL,
    front_image BLOB,
    side_image BLOB
);
CREATE INDEX IF NOT EXISTS results_created_at ON results (created_at);
"""


def _conflict(uuid: str) -> AnalysisError:
    return AnalysisError(
        "conflict",
        f"uuid {uuid} was already answered for other photos or other settings (height, kiosk, the kiosk's "
        "topic tree ...); use a new uuid for a new analysis",
    )


class ResultStore:
    """Thread-safe: one connection guarded by a lock (requests are few and each write is one row)."""

    def __init__(self, path: Path | str, retention_days: float = 30.0, keep_photos: bool = False):
        self.path = str(path)
        self.retention_s = float(retention_days) * 86400.0
        self.keep_photos = keep_photos
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a killed process (the crash tests); only a power loss may drop the
            # last commits, and those requests are redelivered because their ack had not gone out.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _cutoff(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.retention_s

    def _row(self, uuid: str) -> tuple[str, bytes] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT input_hash, answer FROM results WHERE uuid = ? AND created_at >= ?",
                (uuid, self._cutoff()),
            ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def get_json(self, uuid: str) -> bytes | None:
        """The stored answer exactly as it was serialised (what GET /results serves)."""
        row = self._row(uuid)
        return row[1] if row else None

    def get(self, uuid: str) -> dict | None:
        row = self._row(uuid)
        return orjson.loads(row[1]) if row else None

    def lookup(self, uuid: str, input_hash: str) -> dict | None:
        """The stored answer for a redelivery of the same request; conflict when the photos differ."""
        row = self._row(uuid)
        if row is None:
            return None
        if row[0] != input_hash:
            raise _conflict(uuid)
        return orjson.loads(row[1])

    def put(
        self,
        uuid: str,
        input_hash: str,
        answer: dict,
        photos: tuple[bytes, bytes] | None = None,
    ) -> dict:
        """Store `answer` unless the uuid already has one; returns the answer that is now stored.

        The first answer wins, so two deliveries of the same request that were analysed concurrently
        both return the same stored answer. Other photos under a stored uuid raise a conflict.
        """
        front, side = photos if (photos is not None and self.keep_photos) else (None, None)
        blob = answer_json(answer)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT input_hash, answer, created_at FROM results WHERE uuid = ?", (uuid,)
                ).fetchone()
                if row is not None and row[2] >= self._cutoff(now):
                    self._db.execute("COMMIT")
                    if row[0] != input_hash:
                        raise _conflict(uuid)
                    return orjson.loads(row[1])
                self._db.execute(
                    "INSERT OR REPLACE INTO results (uuid, input_hash, created_at, answer, front_image, side_image)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (uuid, input_hash, now, blob, front, side),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
        return answer

    def photos(self, uuid: str) -> tuple[bytes, bytes] | None:
        """The uploaded originals, when they were kept."""
        with self._lock:
            row = self._db.execute(
                "SELECT front_image, side_image FROM results WHERE uuid = ? AND created_at >= ?",
                (uuid, self._cutoff()),
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return bytes(row[0]), bytes(row[1])

    def purge(self, now: float | None = None) -> int:
        """Delete answers older than the retention period; returns how many went."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM results WHERE created_at < ?", (self._cutoff(now),))
            removed = cursor.rowcount
        if removed:
            log.info("purged %d results older than %.1f days", removed, self.retention_s / 86400.0)
        return removed

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
