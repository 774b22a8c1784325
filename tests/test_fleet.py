"""A fleet behind one broker (issue 13): three `skeletond serve` processes in one MQTT 5 shared subscription
on the real Mosquitto, driven by the reference kiosk client (daemon/fleet/client.py).

- a burst is spread over all three and each request is answered once; `skeletond fleet` lists them;
- a daemon SIGKILLed mid-burst (not restarted): the kiosk's retries get every request answered within
  its bound, and no uuid gets two different answers;
- a daemon SIGTERMed mid-burst finishes what it holds and hands the rest back to the others: no request
  even needs a retry.
Plus the rules of the fleet state (busy, unhealthy, draining) and the client's give-up, without daemons.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid as uuidlib

import orjson
import pytest
from fleet_harness import PHOTOS, Fleet, photo_pairs, wait_until

from daemon.fleet.client import KioskClient, KioskGaveUp, request_payload
from daemon.fleet.membership import has_room, next_state, shared_filters
from daemon.fleet.status import DaemonStatus, format_table, parse_status

SHARED_BROKER = ("127.0.0.1", 1883)


def burst(count: int, tag: str) -> list[dict]:
    """`count` requests cycling over four real photo pairs, each with its own uuid."""
    pairs = photo_pairs()
    return [
        request_payload(*pairs[index % len(pairs)], user_id="member@example.com",
                        uuid=f"{tag}-{index:03d}-{uuidlib.uuid4().hex[:6]}", height=170 + index % len(pairs))
        for index in range(count)
    ]


def without_time(answer: dict) -> dict:
    """An answer minus `created_at`: the one field in which two daemons' answers to the same request differ."""
    return {key: value for key, value in answer.items() if key != "created_at"}


def assert_one_result_per_uuid(observer, payloads: list[dict]) -> None:
    # The observer is another connection: the last answers may reach it a moment after the kiosk.
    wait_until(lambda: all(p["uuid"] in observer.answers for p in payloads), 10, "the observer to see every answer")
    time.sleep(0.5)  # and any late duplicate
    for payload in payloads:
        answers = observer.answers.get(payload["uuid"], [])
        assert answers, f"no answer for {payload['uuid']}"
        first = without_time(answers[0])
        assert first["state"] == 0 and first["uuid"] == payload["uuid"], first.get("data")
        for other in answers[1:]:
            assert without_time(other) == first, f"{payload['uuid']} was answered with two different results"


def served(fleet: Fleet) -> dict[str, int]:
    return {d.daemon_id: int(fleet.observer.latest_status(d.daemon_id).get("served", 0)) for d in fleet.daemons}


# -- without daemons ------------------------------------------------------------------------------


def test_fleet_state_rules():
    base = {"stopping": False, "worker_alive": True, "failures": 0, "unhealthy_until": 0.0, "now": 100.0,
            "queue_depth": 0, "queue_size": 4, "was_busy": False, "peers_with_room": 2, "shared": True}
    assert next_state(**base) == "online"
    assert next_state(**{**base, "stopping": True}) == "draining"
    assert next_state(**{**base, "failures": 3}) == "unhealthy"
    assert next_state(**{**base, "worker_alive": False}) == "unhealthy"
    assert next_state(**{**base, "unhealthy_until": 130.0}) == "unhealthy"
    assert next_state(**{**base, "queue_depth": 4}) == "busy"
    # Hysteresis: busy until the queue is down to half.
    assert next_state(**{**base, "queue_depth": 3, "was_busy": True}) == "busy"
    assert next_state(**{**base, "queue_depth": 2, "was_busy": True}) == "online"
    # Leave the group for load only when another member has room: when every member is full, leaving
    # would herd requests onto the last one; with no other member online the broker would drop them.
    assert next_state(**{**base, "queue_depth": 4, "peers_with_room": 0}) == "online"
    assert next_state(**{**base, "queue_depth": 3, "was_busy": True, "peers_with_room": 0}) == "online"
    assert next_state(**{**base, "queue_depth": 4, "shared": False}) == "online"
    assert has_room(DaemonStatus("p", "online", queue_depth=3, queue_size=4))
    assert not has_room(DaemonStatus("p", "online", queue_depth=4, queue_size=4))
    assert not has_room(DaemonStatus("p", "busy", queue_depth=0, queue_size=4))
    assert has_room(DaemonStatus("p", "online"))  # an older daemon that does not say
    assert shared_filters(["p/request", "p/request/+"], "g1") == ["$share/g1/p/request", "$share/g1/p/request/+"]
    assert shared_filters(["p/request"], None) == ["p/request"]


def test_status_parsing_and_table():
    legacy = parse_status("gym-1", b"online")
    assert (legacy.daemon_id, legacy.state, legacy.backend) == ("gym-1", "online", None)
    status = parse_status("gym-2", orjson.dumps({"daemon_id": "spoofed", "state": "busy", "backend": "tensorrt",
                                                 "queue_depth": 16, "queue_size": 16, "served": "many"}))
    assert (status.daemon_id, status.state, status.backend, status.served) == ("gym-2", "busy", "tensorrt", None)
    assert parse_status("gym-3", b"\xff garbage").state == "unknown"
    table = format_table([legacy, status])
    assert "gym-2   busy    tensorrt  16/16" in table and table.endswith("2 daemon(s), 1 taking work")


@pytest.mark.broker
def test_client_gives_up_with_a_clear_error_when_no_daemon_answers():
    prefix = f"test/{uuidlib.uuid4().hex[:10]}/skeleton/v2"
    payload = {"id": "member@example.com", "uuid": f"lonely-{uuidlib.uuid4().hex[:8]}", "forigimg": "", "sorigimg": ""}
    with KioskClient("mqtt://127.0.0.1:1883", prefix, kiosk="kiosk-07") as client:
        started = time.monotonic()
        with pytest.raises(KioskGaveUp) as raised:
            client.request(payload, timeout_s=0.4, attempts=3)
        elapsed = time.monotonic() - started
    assert 1.2 <= elapsed < 5, elapsed
    message = str(raised.value)
    assert payload["uuid"] in message and "3 attempts" in message and f"{prefix}/request/kiosk-07" in message


@pytest.mark.broker
def test_kiosk_request_cli_gives_up_with_exit_code_3(capsys, testdata):
    from daemon.cli import main

    front = testdata / "photos" / "front" / "fitlens_p1_front.jpg"
    side = testdata / "photos" / "side" / "fitlens_p1_side.jpg"
    code = main(["kiosk-request", "--broker", "mqtt://127.0.0.1:1883", "--prefix", f"test/{uuidlib.uuid4().hex[:10]}",
                 "--front", str(front), "--side", str(side), "--timeout", "0.3", "--attempts", "2"])
    assert code == 3
    assert "no answer for uuid" in capsys.readouterr().err


# -- three daemons --------------------------------------------------------------------------------


@pytest.mark.broker
def test_burst_is_spread_over_three_daemons_each_answered_once(tmp_path, capsys):
    from daemon.cli import main

    with Fleet(tmp_path, *SHARED_BROKER, size=3) as fleet:
        payloads = burst(90, "spread")
        with KioskClient(fleet.url, fleet.prefix, kiosk="kiosk-01") as client:
            outcomes = client.request_many(payloads, timeout_s=120, attempts=1)
        assert all(outcome.ok for outcome in outcomes.values()), [o.error for o in outcomes.values() if not o.ok]
        assert_one_result_per_uuid(fleet.observer, payloads)
        assert all(len(fleet.observer.answers[p["uuid"]]) == 1 for p in payloads), "a request was answered twice"

        # Every daemon took part; together they answered exactly the 90 requests (statuses every 1 s).
        wait_until(lambda: sum(served(fleet).values()) == 90, 10, "the statuses to count 90 answers")
        counts = served(fleet)
        assert all(count >= 20 for count in counts.values()), counts  # round robin: 30 each

        # `skeletond fleet` lists the three from their retained statuses.
        assert main(["fleet", "--broker", fleet.url, "--prefix", fleet.prefix, "--wait", "0.5", "--json"]) == 0
        listed = {entry["daemon_id"]: entry for entry in orjson.loads(capsys.readouterr().out)}
        assert set(listed) == {d.daemon_id for d in fleet.daemons}
        for entry in listed.values():
            assert entry["state"] == "online" and entry["backend"] == "onnxruntime"
            assert entry["version"] and entry["queue_size"] == 4 and entry["shared_group"] == "fleet"
            assert entry["served"] == counts[entry["daemon_id"]]
        assert main(["fleet", "--broker", fleet.url, "--prefix", fleet.prefix, "--wait", "0.3"]) == 0
        assert "3 daemon(s), 3 taking work" in capsys.readouterr().out
        # Capture over MQTT is a session one daemon must follow: a group member does not open its topics.
        assert all("capture over MQTT is off in the shared group" in d.log() for d in fleet.daemons)

        # `skeletond kiosk-request` prints the answer; a retry with the same uuid gets the same answer.
        photos = [str(PHOTOS / view / f"fitlens_p5_{view}.jpg") for view in ("front", "side")]
        command = ["kiosk-request", "--broker", fleet.url, "--prefix", fleet.prefix, "--front", photos[0],
                   "--side", photos[1], "--uuid", "cli-once", "--height", "172"]
        assert main(command) == 0
        first = orjson.loads(capsys.readouterr().out)
        assert first["uuid"] == "cli-once" and first["state"] == 0
        assert main(command) == 0
        assert without_time(orjson.loads(capsys.readouterr().out)) == without_time(first)


def _run_burst_in_background(fleet: Fleet, payloads: list[dict], timeout_s: float, attempts: int) -> tuple:
    outcomes: dict = {}

    def run() -> None:
        with KioskClient(fleet.url, fleet.prefix, kiosk="kiosk-01") as client:
            outcomes.update(client.request_many(payloads, timeout_s=timeout_s, attempts=attempts))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcomes


@pytest.mark.broker
def test_sigkill_mid_burst_every_request_answered_within_the_retry_bound(tmp_path):
    timeout_s, attempts = 12.0, 4
    with Fleet(tmp_path, *SHARED_BROKER, size=3) as fleet:
        payloads = burst(60, "kill")
        victim = fleet.daemons[1]
        thread, outcomes = _run_burst_in_background(fleet, payloads, timeout_s, attempts)
        wait_until(lambda: fleet.observer.answered() >= 12, 120, "a fifth of the burst answered")
        victim.signal(signal.SIGKILL)
        victim.process.wait(10)
        thread.join(timeout_s * attempts + 30)
        assert not thread.is_alive()

        assert len(outcomes) == len(payloads)
        failed = [outcome.error for outcome in outcomes.values() if not outcome.ok]
        assert not failed, failed
        assert max(outcome.elapsed_s for outcome in outcomes.values()) < timeout_s * attempts
        # The requests the dead daemon held were lost by the broker (clean session): the retries saved them.
        assert any(outcome.attempts > 1 for outcome in outcomes.values())
        assert_one_result_per_uuid(fleet.observer, payloads)


@pytest.mark.broker
def test_sigterm_mid_burst_finishes_what_it_holds_and_hands_back_the_rest(tmp_path):
    with Fleet(tmp_path, *SHARED_BROKER, size=3) as fleet:
        payloads = burst(60, "term")
        leaving = fleet.daemons[2]
        # A long timeout: any retry would mean a request was dropped, not that it was slow.
        thread, outcomes = _run_burst_in_background(fleet, payloads, timeout_s=120, attempts=2)
        wait_until(lambda: fleet.observer.answered() >= 12, 120, "a fifth of the burst answered")
        leaving.signal(signal.SIGTERM)
        assert leaving.process.wait(30) == 0, leaving.log()[-3000:]
        thread.join(300)
        assert not thread.is_alive()

        assert all(outcome.ok for outcome in outcomes.values())
        assert all(outcome.attempts == 1 for outcome in outcomes.values()), "a request had to be retried"
        assert_one_result_per_uuid(fleet.observer, payloads)
        log = leaving.log()
        assert "leaving" in log and "handing a request back" in log, log[-3000:]
        final = fleet.observer.statuses[leaving.daemon_id]
        assert [s.get("state") for s in final][-2:] == ["draining", "offline"]
        # It answered what it held before leaving, the others the rest: each request once in all.
        wait_until(lambda: sum(served(fleet).values()) == len(payloads), 10, "the statuses to count every answer")
        assert served(fleet)[leaving.daemon_id] > 0


# -- deploy/compose.fleet.yaml --------------------------------------------------------------------


def test_compose_fleet_example_is_consistent():
    """Three daemons with unique ids and stores in one group; every variable names a real setting."""
    import yaml
    from conftest import REPO_ROOT

    from daemon.config import load_config

    compose = yaml.safe_load((REPO_ROOT / "deploy" / "compose.fleet.yaml").read_text())
    daemons = {name: service for name, service in compose["services"].items() if name.startswith("skeletond")}
    assert len(daemons) == 3 and "mosquitto" in compose["services"]
    configs = []
    for service in daemons.values():
        environ = {key: _compose_value(str(value)) for key, value in service["environment"].items()}
        unknown = [key for key in environ if key.startswith("SKELETON_") and key not in (
            f"SKELETON_{section}_{key}".upper() for section, keys in _settings().items() for key in keys)]
        assert not unknown, f"variables that name no setting: {unknown}"
        configs.append(load_config(environ=environ))
        assert any(volume.endswith(":/var/lib/skeleton/store") for volume in service["volumes"])
    assert {config.mqtt.shared_group for config in configs} == {"skeletond"}
    for attribute in ("client_id", "daemon_id"):
        assert len({getattr(config.mqtt, attribute) for config in configs}) == 3, attribute
    stores = {volume for service in daemons.values() for volume in service["volumes"] if "store" in volume}
    assert len(stores) == 3
    mosquitto_conf = compose["services"]["mosquitto"]["volumes"][0].split(":")[0]
    assert (REPO_ROOT / "deploy" / mosquitto_conf).is_file()


def _compose_value(value: str) -> str:
    """A compose value with `${VAR:-default}` taken as its default and `${VAR:?...}` as a placeholder."""
    import re

    value = re.sub(r"\$\{[^:}]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{[^}]*\}", "placeholder", value)


def _settings() -> dict[str, list[str]]:
    import dataclasses

    from daemon.config import Config

    return {section.name: [f.name for f in dataclasses.fields(getattr(Config(), section.name))]
            for section in dataclasses.fields(Config)}


@pytest.mark.broker
def test_fleet_mosquitto_config_starts(tmp_path):
    """deploy/mosquitto/fleet.conf, with its paths moved into a temporary folder, starts a real Mosquitto."""
    import getpass
    import shutil
    import socket
    import subprocess

    from conftest import REPO_ROOT
    from fleet_harness import free_port

    port = free_port()
    (tmp_path / "passwd").write_text("")
    shutil.copy(REPO_ROOT / "deploy" / "mosquitto.acl", tmp_path / "mosquitto.acl")
    text = (REPO_ROOT / "deploy" / "mosquitto" / "fleet.conf").read_text()
    text = text.replace("/mosquitto/data/", f"{tmp_path}/").replace("/mosquitto/config/", f"{tmp_path}/")
    text = text.replace("listener 1883", f"listener {port} 127.0.0.1") + f"user {getpass.getuser()}\n"
    (tmp_path / "fleet.conf").write_text(text)
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([mosquitto, "-c", str(tmp_path / "fleet.conf")], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            assert process.poll() is None, process.stdout.read().decode(errors="replace")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, 10, "mosquitto with the fleet config to listen")
    finally:
        process.terminate()
        process.wait(10)


# -- erasure in a fleet (docs/fleet.md "Erasure") -------------------------------------------------


def _store_uuids(daemon) -> list[str]:
    """Every uuid in the daemon's SQLite file (read beside the running daemon: WAL allows it)."""
    import sqlite3

    path = daemon.config_path.with_suffix(".sqlite3")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return sorted(row[0] for row in db.execute("SELECT uuid FROM results"))


@pytest.mark.broker
def test_an_erasure_asked_of_one_daemon_reaches_every_daemon_of_the_group(tmp_path):
    """Two daemons in one group, each holding results of the same member (its own store, its own key):
    one MQTT erase command from a kiosk (the broker hands it to one daemon) empties both stores; so does an
    HTTP DELETE on one daemon. Someone else's results stay; the id is in no daemon's log."""
    import httpx
    from fleet_harness import analyse_until_every_daemon_holds, member_visits

    member, other = "Fleet.Member@Example.com", "someone-else@example.com"
    with Fleet(tmp_path, *SHARED_BROKER, size=2) as fleet:
        ports = [d.http_port for d in fleet.daemons]
        with KioskClient(fleet.url, fleet.prefix, kiosk="kiosk-01") as client:
            analyse_until_every_daemon_holds(client, ports, other, "keep")
            kept = {d.daemon_id: _store_uuids(d) for d in fleet.daemons}

            analyse_until_every_daemon_holds(client, ports, member, "mq")
            held = {d.daemon_id: len(member_visits(d.http_port, member)) for d in fleet.daemons}
            answer = client.request({"command": "erase", "uuid": f"erase-{uuidlib.uuid4().hex[:8]}",
                                     "id": member.upper()}, timeout_s=30, attempts=1)
            # `erased`: the answering daemon's own count; `fleet`: the others were told.
            assert answer["state"] == 0 and answer["command"] == "erase", answer
            assert answer["fleet"] == "sent" and answer["fleet_offline"] == []
            assert answer["erased"] in held.values()
            wait_until(lambda: not any(member_visits(port, member) for port in ports), 10,
                       "every daemon to erase the member")

            analyse_until_every_daemon_holds(client, ports, member, "http")
        first = fleet.daemons[0]
        held_here = len(member_visits(first.http_port, member))
        response = httpx.delete(f"http://127.0.0.1:{first.http_port}/members/{member}", timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["erased"] == held_here
        assert body["fleet"] == "sent" and body["fleet_offline"] == []
        wait_until(lambda: not any(member_visits(port, member) for port in ports), 10,
                   "every daemon to erase the member after the HTTP DELETE")

        # The store files hold nothing of the member: only someone else's results are left.
        for daemon in fleet.daemons:
            assert _store_uuids(daemon) == kept[daemon.daemon_id]
            assert kept[daemon.daemon_id], "each daemon held someone else's result too"
        metrics = {d.daemon_id: httpx.get(f"http://127.0.0.1:{d.http_port}/metrics", timeout=5).text
                   for d in fleet.daemons}
    for daemon in fleet.daemons:
        log = daemon.log().lower()
        assert member.lower() not in log, "a member id reached a daemon's log"
    # Two fan-outs in all (one per erasure), each received by the other daemon.
    sent = sum(_counter(text, 'skeleton_fleet_erasures_total{direction="sent",outcome="sent"}') for text in metrics.values())
    received = sum(_counter(text, 'skeleton_fleet_erasures_total{direction="received",outcome="erased"}')
                   for text in metrics.values())
    assert (sent, received) == (2, 2)


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
