"""Members: the keyed hash (never the e-mail in clear), the key files, history per member, erasure that
leaves nothing in the SQLite files, and signed report links."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from daemon.members import LINK_KEY_FILE, MEMBER_KEY_FILE, MemberKeys, normalise_member_id
from daemon.store import ResultStore

EMAIL = "Someone.Else@Example.com"


def test_key_files_are_made_once_with_mode_0600(tmp_path):
    keys = MemberKeys(tmp_path / "data")
    for name in (MEMBER_KEY_FILE, LINK_KEY_FILE):
        path = tmp_path / "data" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_bytes()) == 32
    again = MemberKeys(tmp_path / "data")
    assert again.member_hash(EMAIL) == keys.member_hash(EMAIL)
    # Another folder, another key: the hash cannot be recomputed without this daemon's key.
    assert MemberKeys(tmp_path / "other").member_hash(EMAIL) != keys.member_hash(EMAIL)


def test_member_hash_normalises_and_hides_the_address(tmp_path):
    keys = MemberKeys(tmp_path)
    assert normalise_member_id("  Someone.Else@EXAMPLE.com ") == "someone.else@example.com"
    assert keys.member_hash(" someone.else@example.COM") == keys.member_hash(EMAIL)
    assert keys.member_hash("someone@example.com") != keys.member_hash(EMAIL)
    digest = keys.member_hash(EMAIL)
    assert len(digest) == 64 and "example" not in digest


def test_report_link_token_is_bound_to_uuid_and_expires(tmp_path):
    keys = MemberKeys(tmp_path)
    token, expires = keys.sign_report("uuid-1", ttl_s=60, now=1000.0)
    assert expires == 1060
    assert keys.verify_report("uuid-1", token, now=1059.0)
    assert not keys.verify_report("uuid-1", token, now=1061.0)  # expired
    assert not keys.verify_report("uuid-2", token, now=1001.0)  # another report
    forged_expiry = f"{expires + 10**6}.{token.split('.', 1)[1]}"
    assert not keys.verify_report("uuid-1", forged_expiry, now=1001.0)
    for bad in ("", "abc", "123.", ".abc", "12.34.56", "-5.x"):
        assert not keys.verify_report("uuid-1", bad, now=1001.0)


def _answer(uuid: str, marker: str) -> dict:
    # Large enough to spill into SQLite overflow pages, as real answers with annotated photos do.
    return {"uuid": uuid, "state": 0, "forigimg": marker * 4000, "sorigimg": marker * 4000,
            "measures": {"far_tilt": {"value": 1.0}}, "created_at": "2026-12-01T00:00:00+00:00"}


def _files_bytes(db_path) -> bytes:
    """Every byte SQLite keeps for this store: the database, its WAL and shared-memory files."""
    data = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = f"{db_path}{suffix}"
        if os.path.exists(path):
            with open(path, "rb") as handle:
                data += handle.read()
    return data


def test_history_is_per_member_and_erasure_leaves_nothing_in_the_files(tmp_path):
    db_path = tmp_path / "results.sqlite3"
    keys = MemberKeys(tmp_path)
    store = ResultStore(db_path, retention_days=30, keep_photos=True)
    member, other = keys.member_hash(EMAIL), keys.member_hash("other@example.com")
    for index in range(3):
        store.put(f"visit-{index}", "h", _answer(f"visit-{index}", f"ERASEME{index}"),
                  photos=(b"FRONTPHOTO-ERASEME" * 500, b"SIDEPHOTO-ERASEME" * 500), member=member)
    store.put("keep-1", "h", _answer("keep-1", "KEEPME"), photos=(b"FRONTKEEP" * 500, b"SIDEKEEP" * 500),
              member=other)
    assert [a["uuid"] for a in store.member_history(member)] == ["visit-0", "visit-1", "visit-2"]
    assert [a["uuid"] for a in store.member_history(other)] == ["keep-1"]
    before = _files_bytes(db_path)
    assert b"ERASEME0" in before and b"FRONTPHOTO-ERASEME" in before  # the scan below can see rows
    assert EMAIL.lower().encode() not in before and EMAIL.encode() not in before

    assert store.erase_member(member) == 3
    assert store.member_history(member) == []
    assert store.get("visit-1") is None and store.photos("visit-1") is None
    assert store.get("keep-1") is not None
    store.close()

    after = _files_bytes(db_path)
    for marker in (b"ERASEME0", b"ERASEME1", b"ERASEME2", b"FRONTPHOTO-ERASEME", b"SIDEPHOTO-ERASEME",
                   b"visit-0", b"visit-1", b"visit-2", member.encode()):
        assert marker not in after, f"{marker!r} is still in the SQLite files after erasure"
    assert b"KEEPME" in after and b"FRONTKEEP" in after
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM results WHERE member = ?", (member,)).fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1


def test_retention_applies_to_history(tmp_path):
    keys = MemberKeys(tmp_path)
    store = ResultStore(tmp_path / "r.sqlite3", retention_days=1)
    member = keys.member_hash(EMAIL)
    store.put("old", "h", _answer("old", "OLDVISIT"), member=member)
    store.put("new", "h", _answer("new", "NEWVISIT"), member=member)
    store._db.execute("UPDATE results SET created_at = created_at - 2 * 86400 WHERE uuid = 'old'")
    assert [a["uuid"] for a in store.member_history(member)] == ["new"]
    assert store.purge() == 1
    store.close()
    assert b"OLDVISIT" not in _files_bytes(tmp_path / "r.sqlite3")


def test_an_older_store_gains_the_member_column(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE results (uuid TEXT PRIMARY KEY, input_hash TEXT NOT NULL, created_at REAL NOT NULL,"
            " answer BLOB NOT NULL, front_image BLOB, side_image BLOB);"
            "INSERT INTO results VALUES ('u0', 'h', 1e12, X'7B7D', NULL, NULL);"
        )
    store = ResultStore(path)
    store.put("u1", "h", {"uuid": "u1"}, member="abc")
    assert [a["uuid"] for a in store.member_history("abc")] == ["u1"]
    assert store.get("u0") == {}
    store.close()


@pytest.mark.parametrize("mode", [0o644])
def test_a_readable_key_file_is_warned_about(tmp_path, caplog, mode):
    MemberKeys(tmp_path)
    os.chmod(tmp_path / MEMBER_KEY_FILE, mode)
    with caplog.at_level("WARNING"):
        MemberKeys(tmp_path)
    assert "readable by others" in caplog.text
    assert str(tmp_path / MEMBER_KEY_FILE) in caplog.text


def test_the_erase_command_answers_with_the_count_or_a_seed_shaped_error():
    from daemon.members import erase_answer

    erased: list[str] = []

    def erase(member_id: str) -> dict:
        erased.append(member_id)
        return {"erased": 3}

    answer = erase_answer({"command": "erase", "uuid": "e-1", "id": EMAIL}, erase)
    assert answer == {"uuid": "e-1", "state": 0, "command": "erase", "data": {"state": 0}, "erased": 3}
    # In a shared group Service.erase_everywhere adds what the fan-out did; the answer carries it as is.
    fleet = erase_answer({"command": "erase", "uuid": "e-3", "id": EMAIL},
                         lambda member_id: {"erased": 1, "fleet": "sent", "fleet_offline": ["d3"]})
    assert (fleet["erased"], fleet["fleet"], fleet["fleet_offline"]) == (1, "sent", ["d3"])
    erased.clear()
    erase_answer({"command": "erase", "uuid": "e-1", "id": EMAIL}, erase)
    assert erased == [EMAIL]
    for bad in (None, "", "   ", 5, "x" * 321):
        refused = erase_answer({"command": "erase", "uuid": "e-2", "id": bad}, erase)
        assert refused["data"]["state"] == -1 and refused["data"]["errors"] == "invalid field: id"
        assert refused["uuid"] == "e-2"
    assert erased == [EMAIL]


def test_an_in_memory_store_gets_keys_for_the_process_only(tmp_path, monkeypatch, caplog):
    from daemon.config import load_config
    from daemon.service import Service

    monkeypatch.chdir(tmp_path)
    service = Service(load_config(overrides={"store": {"path": ":memory:"}}), analyzer_factory=lambda cfg: None)
    assert service.keys is not None and service.keys.folder is None
    assert list(tmp_path.iterdir()) == []  # no key files dropped in the working folder
    with caplog.at_level("INFO"):
        assert service.erase_member(EMAIL) == 0
    assert "erased 0 stored results of one member" in caplog.text
    assert EMAIL.lower() not in caplog.text.lower()  # the id is an e-mail: never in a log
    service.store.close()


@pytest.mark.broker
def test_a_kiosk_erases_a_member_over_mqtt_through_its_own_tree(tmp_path):
    """The daemon as a process against the shared Mosquitto: a kiosk's two analyses on its own tree, then
    its erase command on the same tree, answered there; the database checked afterwards."""
    import uuid as uuidlib

    import orjson
    from test_mqtt import SHARED_BROKER, Daemon, Kiosk, request_payload, wait_until

    prefix = f"test/{uuidlib.uuid4().hex[:10]}/skeleton/v2"
    kiosk = Kiosk(*SHARED_BROKER, prefix)
    daemon = Daemon(tmp_path, *SHARED_BROKER, prefix)
    member = "Erase.Me@Example.com"
    try:
        daemon.start()
        request_topic = f"{prefix}/request/kiosk-a"
        for uuid in ("mq-visit-1", "mq-visit-2"):
            kiosk.publish(request_payload(uuid, id=member), topic=request_topic)
        # Someone else, on other photos (the same photos would give the same annotated photo bytes).
        from test_mqtt import b64, testdata_path
        other = {"forigimg": b64(testdata_path("photos", "front", "fitlens_p2_front.jpg").read_bytes()),
                 "sorigimg": b64(testdata_path("photos", "side", "fitlens_p2_side.jpg").read_bytes())}
        kiosk.publish(request_payload("mq-other", id="someone-else@example.com", **other), topic=request_topic)
        wait_until(lambda: all(kiosk.on(f"{prefix}/result/kiosk-a/{u}") for u in ("mq-visit-1", "mq-visit-2", "mq-other")),
                   120, "the three analyses on kiosk-a's result tree")
        answers = [orjson.loads(kiosk.on(f"{prefix}/result/kiosk-a/mq-visit-{i}")[0].payload) for i in (1, 2)]
        assert all(answer["state"] == 0 for answer in answers)

        kiosk.publish(orjson.dumps({"command": "erase", "uuid": "erase-1", "id": member.lower()}), topic=request_topic)
        wait_until(lambda: kiosk.on(f"{prefix}/result/kiosk-a/erase-1"), 30, "the erase answer on kiosk-a's tree")
        reply = orjson.loads(kiosk.on(f"{prefix}/result/kiosk-a/erase-1")[0].payload)
        assert reply == {"uuid": "erase-1", "state": 0, "command": "erase", "data": {"state": 0}, "erased": 2}
        # Not on the plain tree, nor any other kiosk's.
        assert not kiosk.on(f"{prefix}/result/erase-1")

        kiosk.publish(orjson.dumps({"command": "erase", "uuid": "erase-2"}), topic=request_topic)
        wait_until(lambda: kiosk.on(f"{prefix}/result/kiosk-a/erase-2"), 30, "the refusal")
        refusal = orjson.loads(kiosk.on(f"{prefix}/result/kiosk-a/erase-2")[0].payload)
        assert refusal["data"]["errors"] == "invalid field: id"
    finally:
        daemon.close()
        kiosk.close()
    db_path = tmp_path / "results.sqlite3"
    with sqlite3.connect(db_path) as db:
        assert sorted(row[0] for row in db.execute("SELECT uuid FROM results")) == ["mq-other"]
    raw = _files_bytes(db_path)
    for answer in answers:
        assert answer["forigimg"][2000:2064].encode() not in raw and answer["uuid"].encode() not in raw
    assert member.lower().encode() not in daemon.log().lower().encode()
