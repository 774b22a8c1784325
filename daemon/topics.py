"""The MQTT topic trees under `mqtt.topic_prefix`: one place that maps a kiosk and a uuid to a topic.

Two trees share the prefix (README, "MQTT"):

  per kiosk (several kiosks)              single kiosk (plain)
  request/<kiosk>                         request                  requests (the daemon subscribes to both)
  result/<kiosk>/<uuid>                   result/<uuid>            each answer or error
  error/<kiosk>                           error                    errors without a usable uuid
  reply/<kiosk>/...                       reply/...                where an MQTT 5 ResponseTopic may point
  status/<daemon id>                                               retained online / offline
  fleet/erase                                                      daemons only: a member's erasure, fanned
                                                                   out to every daemon of a shared group

<kiosk> is the kiosk's broker username, so the broker's ACL (`pattern write <prefix>/request/%u`,
`pattern read <prefix>/result/%u/#`) decides who may publish and read there: a kiosk cannot read
another kiosk's results even if it tries. The daemon reads the kiosk from the topic a request arrived on,
never from the payload. `kiosk=None` is the plain single-kiosk tree.
"""

from __future__ import annotations

from dataclasses import dataclass

_WILDCARDS = ("+", "#")


@dataclass(frozen=True)
class Topics:
    prefix: str

    @classmethod
    def under(cls, prefix: str) -> Topics:
        return cls(prefix.rstrip("/"))

    def request_filters(self) -> tuple[str, str]:
        """What the daemon subscribes to: the plain request topic and every kiosk's request topic."""
        return f"{self.prefix}/request", f"{self.prefix}/request/+"

    def request(self, kiosk: str | None) -> str:
        return f"{self.prefix}/request" if kiosk is None else f"{self.prefix}/request/{kiosk}"

    def kiosk_of(self, topic: str) -> str | None:
        """The kiosk whose tree a request topic belongs to (None: the plain tree).

        ValueError for a topic outside request/ and request/<kiosk> (the daemon subscribes to nothing else).
        An empty level (`request/`) is the plain tree: no kiosk's ACL pattern can match it.
        """
        plain = f"{self.prefix}/request"
        if topic == plain:
            return None
        if topic.startswith(plain + "/"):
            kiosk = topic[len(plain) + 1:]
            if "/" not in kiosk and not any(w in kiosk for w in _WILDCARDS):
                return kiosk or None
        raise ValueError(f"{topic!r} is not a request topic under {self.prefix}")

    def result(self, kiosk: str | None, uuid: str) -> str:
        return f"{self.prefix}/result/{uuid}" if kiosk is None else f"{self.prefix}/result/{kiosk}/{uuid}"

    def error(self, kiosk: str | None) -> str:
        return f"{self.prefix}/error" if kiosk is None else f"{self.prefix}/error/{kiosk}"

    def answer(self, kiosk: str | None, uuid: str | None) -> str:
        """Where an answer goes: the uuid's result topic, or the tree's error topic without a usable uuid."""
        return self.result(kiosk, uuid) if uuid is not None else self.error(kiosk)

    def reply_tree(self, kiosk: str | None) -> str:
        """The topic filter (ending in /#) an MQTT 5 ResponseTopic of this kiosk must fall under.

        The plain tree's reply/# spans the kiosks' reply trees too: that is why the plain request topic is
        for a broker with a single kiosk only (deploy/mosquitto.acl grants it to no kiosk by default).
        """
        return f"{self.prefix}/reply/#" if kiosk is None else f"{self.prefix}/reply/{kiosk}/#"

    def response_topic_allowed(self, kiosk: str | None, topic: str) -> bool:
        """A ResponseTopic is obeyed only inside the requesting kiosk's own reply tree (and free of wildcards)."""
        head = self.reply_tree(kiosk)[:-1]  # without the '#'
        return topic.startswith(head) and len(topic) > len(head) and not any(w in topic for w in _WILDCARDS)

    def capture(self, kiosk: str | None, uuid: str) -> str:
        """A live capture session's tree (docs/capture.md): start, frame, command, still in; guide, event out."""
        return f"{self.prefix}/capture/{uuid}" if kiosk is None else f"{self.prefix}/capture/{kiosk}/{uuid}"

    def status(self, daemon_id: str) -> str:
        return f"{self.prefix}/status/{daemon_id}"

    def fleet_erase(self) -> str:
        """Daemon to daemon: a member's erasure, published by the daemon that was asked to every other
        daemon of a shared group (docs/fleet.md "Erasure"). The ACL lets daemon users read and write it, and
        no kiosk: a kiosk erases through its own request tree."""
        return f"{self.prefix}/fleet/erase"
