"""The result store: idempotent redelivery, conflicts, retention, no photos unless configured, WAL."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from daemon.errors import AnalysisError
from daemon.store import ResultStore


@pytest.fixture
def store(tmp_path):
    instance = ResultStore(tmp_path / "results.sqlite3", retention_days=30)
    yield instance
    instance.close()


def test_put_then_get_returns_the_same_answer(store):
    answer = {"uuid": "u1", "state": 0, "far_grade": "A", "pose2df2": [[[1.5, 2.5]]]}
    assert store.put("u1", "hash-a", answer) == answer
    assert store.get("u1") == answer
    assert store.lookup("u1", "hash-a") == answer
    assert store.get("missing") is None
    assert store.lookup("missing", "hash-a") is None


def test_same_uuid_other_photos_is_a_conflict(store):
    store.put("u1", "hash-a", {"uuid": "u1", "n": 1})
    with pytest.raises(AnalysisError) as caught:
        store.lookup("u1", "hash-b")
    assert caught.value.kind == "conflict"
    assert "u1" in caught.value.detail and "other photos" in caught.value.detail
    with pytest.raises(AnalysisError):
        store.put("u1", "hash-b", {"uuid": "u1", "n": 2})
    assert store.get("u1") == {"uuid": "u1", "n": 1}


def test_first_answer_wins_for_a_redelivery(store):
    """Two deliveries analysed concurrently must both return the one stored answer."""
    first = store.put("u1", "hash-a", {"uuid": "u1", "n": 1})
    second = store.put("u1", "hash-a", {"uuid": "u1", "n": 2})
    assert first == second == {"uuid": "u1", "n": 1}


def test_retention_purges_old_answers(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite3", retention_days=1)
    store.put("old", "h", {"uuid": "old"})
    store.put("new", "h", {"uuid": "new"})
    with store._lock:
        store._db.execute("UPDATE results SET created_at = created_at - 2 * 86400 WHERE uuid = 'old'")
    # Expired answers are invisible before the purge and gone after it; an expired uuid may be reused.
    assert store.get("old") is None
    assert store.purge() == 1
    assert store.count() == 1
    assert store.put("old", "other-hash", {"uuid": "old", "again": True}) == {"uuid": "old", "again": True}
    store.close()


def test_photos_are_not_stored_unless_configured(tmp_path):
    plain = ResultStore(tmp_path / "plain.sqlite3")
    plain.put("u1", "h", {"uuid": "u1"}, photos=(b"front-bytes", b"side-bytes"))
    assert plain.photos("u1") is None
    raw = sqlite3.connect(tmp_path / "plain.sqlite3").execute("SELECT front_image, side_image FROM results")
    assert raw.fetchall() == [(None, None)]
    plain.close()

    keeping = ResultStore(tmp_path / "keep.sqlite3", keep_photos=True)
    keeping.put("u1", "h", {"uuid": "u1"}, photos=(b"front-bytes", b"side-bytes"))
    assert keeping.photos("u1") == (b"front-bytes", b"side-bytes")
    keeping.close()


def test_wal_mode_and_survives_reopen(tmp_path):
    path = tmp_path / "r.sqlite3"
    store = ResultStore(path)
    store.put("u1", "h", {"uuid": "u1", "x": [1, 2, 3]})
    store.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened = ResultStore(path)
    assert reopened.get_json("u1") == b'{"uuid":"u1","x":[1,2,3]}'
    reopened.close()


def test_concurrent_writers(store):
    errors: list[BaseException] = []

    def write(start: int) -> None:
        try:
            for index in range(start, start + 50):
                store.put(f"u{index}", "h", {"uuid": f"u{index}"})
                assert store.get(f"u{index}") == {"uuid": f"u{index}"}
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n * 100,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store.count() == 200
