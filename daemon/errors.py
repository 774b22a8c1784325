"""Errors as values with a kind; each transport maps a kind to its own reply.

The seed's answers keep their literal strings ("image load error", "processing error"); `detail` says
what exactly was wrong (decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass

# kind -> (HTTP status, seed key, seed text)
_SEED_SHAPES = {
    "validation": (400, "errors", "invalid request"),
    "image_load": (400, "errors", "image load error"),
    "too_large": (413, "errors", "request too large"),
    "processing": (400, "message", "processing error"),
    "conflict": (409, "errors", "uuid conflict"),
    "overload": (503, "errors", "server busy"),
    "internal": (500, "message", "processing error"),
}


@dataclass
class AnalysisError(Exception):
    """A request that cannot be answered, with the reason in words a kiosk integrator can act on."""

    kind: str
    detail: str
    # Validation errors carry their own short text in `errors` (decisions.md).
    text: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _SEED_SHAPES:
            raise ValueError(f"unknown error kind {self.kind!r}")
        super().__init__(self.detail)

    @property
    def http_status(self) -> int:
        return _SEED_SHAPES[self.kind][0]

    def to_answer(self, uuid: str | None = None) -> dict:
        """The seed's error shape: {"data": {"state": -1, "errors"|"message": ..., "detail": ...}}."""
        _, key, text = _SEED_SHAPES[self.kind]
        data: dict = {"state": -1, key: self.text or text, "detail": self.detail, "kind": self.kind}
        answer: dict = {"data": data}
        if uuid is not None:
            answer["uuid"] = uuid
        return answer
