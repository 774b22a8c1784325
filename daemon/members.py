"""Members without their e-mail in clear, and report links a phone can open (decisions.md "Members").

Two secrets in the daemon's data folder (the result store's folder unless `store.key_dir` says
otherwise), each made on first start with mode 0600 and never logged:
- `member.key`: the key of HMAC-SHA256 over the normalised member id. The store keeps only that hash,
  so the history of `someone@example.com` can be found and erased, but the address cannot be read back
  from the database (nor guessed from a list of addresses without the key).
- `link.key`: the key that signs report links (HMAC over the uuid and the expiry time), so a member's
  phone opens one report without the daemon's bearer token, until the link expires.
Separate keys: leaking one purpose's key must not forge the other's values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

from daemon.errors import AnalysisError

log = logging.getLogger(__name__)

KEY_BYTES = 32
MEMBER_KEY_FILE = "member.key"
LINK_KEY_FILE = "link.key"


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, made (random, mode 0600) if the file does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two daemons starting at once on one folder agree on a single key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        log.info("made a new key file %s", path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("key file %s is readable by others (mode %o); chmod 600 it", path, mode)
    key = path.read_bytes()
    if len(key) < 16:
        raise ValueError(f"key file {path} holds {len(key)} bytes; delete it to make a new one")
    return key


def normalise_member_id(member_id: str) -> str:
    """The form the hash is taken of: Unicode NFKC, surrounding blanks dropped, case folded.

    Mail providers treat addresses case-insensitively in practice, and kiosks capitalise what members
    type, so `Someone@Example.com ` and `someone@example.com` are one member.
    """
    return unicodedata.normalize("NFKC", member_id).strip().casefold()


class MemberKeys:
    """The member hash and report-link signing, keyed from one folder."""

    def __init__(self, folder: Path | None):
        """`folder=None`: keys for this process only (an in-memory store, whose history dies with it)."""
        self.folder = None if folder is None else Path(folder)
        if self.folder is None:
            self._member_key, self._link_key = secrets.token_bytes(KEY_BYTES), secrets.token_bytes(KEY_BYTES)
        else:
            self._member_key = load_or_create_key(self.folder / MEMBER_KEY_FILE)
            self._link_key = load_or_create_key(self.folder / LINK_KEY_FILE)

    def member_hash(self, member_id: str) -> str:
        """Hex HMAC-SHA256 of the normalised id: what the store keeps instead of the address."""
        return hmac.new(
            self._member_key, normalise_member_id(member_id).encode("utf-8"), hashlib.sha256
        ).hexdigest()

    def _link_mac(self, uuid: str, expires: int) -> str:
        digest = hmac.new(self._link_key, f"report\n{uuid}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign_report(self, uuid: str, ttl_s: float, now: float | None = None) -> tuple[str, int]:
        """A token for /report/<uuid>?t=<token>, and the Unix time it expires at."""
        expires = int((time.time() if now is None else now) + ttl_s)
        return f"{expires}.{self._link_mac(uuid, expires)}", expires

    def verify_report(self, uuid: str, token: str, now: float | None = None) -> bool:
        """True when `token` was signed for `uuid` and has not expired."""
        expires_text, _, mac = token.partition(".")
        if not expires_text.isdigit() or not mac:
            return False
        expires = int(expires_text)
        if expires < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(mac, self._link_mac(uuid, expires))


ERASE_COMMAND = "erase"
# Member ids are e-mail addresses; anything longer is not one.
MAX_MEMBER_ID_LENGTH = 320


def member_problem(member_id: object) -> str | None:
    """Why `member_id` cannot name a member (None when it can): one rule for HTTP and MQTT."""
    if not isinstance(member_id, str) or not member_id.strip():
        return "the member id is empty"
    if len(member_id) > MAX_MEMBER_ID_LENGTH:
        return f"the member id is longer than {MAX_MEMBER_ID_LENGTH} characters"
    return None


def erase_answer(payload: dict, erase: Callable[[str], dict]) -> dict:
    """The MQTT erase command for kiosks: `{"command": "erase", "uuid": "<reply uuid>", "id": "<member>"}`
    published on the kiosk's own request topic; `erase(id)` removes every stored result of the member
    (Service.erase_everywhere: here, and in a fleet on the other daemons too) and says what it did
    (`{"erased": N}`, plus `fleet` and `fleet_offline` in a shared group). The answer goes to the kiosk's
    own result topic for that uuid: `{"uuid", "state": 0, "command": "erase", "erased": N, ...}`, or the
    seed's error shape."""
    uuid = payload.get("uuid")
    member_id = payload.get("id")
    problem = member_problem(member_id)
    if problem:
        return AnalysisError("validation", f"erase needs the member id: {problem}", text="invalid field: id").to_answer(
            uuid if isinstance(uuid, str) else None
        )
    return {"uuid": uuid, "state": 0, "command": ERASE_COMMAND, "data": {"state": 0}, **erase(member_id)}
