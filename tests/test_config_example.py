"""deploy/skeletond.example.toml: every key documented, none set (issue 10: its explicit cache paths
overrode the systemd unit's XDG_CACHE_HOME, moving the models and the store out of /var/lib/skeletond)."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from daemon.config import Config, load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "skeletond.example.toml"


def _keys(text: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """section -> keys documented as `# key = value`, and section -> keys set (uncommented)."""
    documented: dict[str, set[str]] = {}
    set_keys: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        header = re.match(r"^\[([a-z_]+)\]\s*$", line)
        if header:
            section = header.group(1)
            continue
        commented = re.match(r"^#\s?([a-z_]+)\s*=", line) or re.match(rf"^#\s?\[{section}\.([a-z_]+)\]", line)
        if commented:
            documented.setdefault(section, set()).add(commented.group(1))
        active = re.match(r"^([a-z_]+)\s*=", line)
        if active:
            set_keys.setdefault(section, set()).add(active.group(1))
    return documented, set_keys


def test_every_setting_is_documented_in_the_example():
    documented, set_keys = _keys(EXAMPLE.read_text())
    reference = Config()
    for section in dataclasses.fields(reference):
        fields = {f.name for f in dataclasses.fields(getattr(reference, section.name))}
        shown = documented.get(section.name, set()) | set_keys.get(section.name, set())
        assert fields <= shown, f"[{section.name}] does not document {sorted(fields - shown)}"


def test_the_example_sets_no_key():
    _, set_keys = _keys(EXAMPLE.read_text())
    assert not any(set_keys.values()), f"keys with sane defaults must stay commented out: {set_keys}"


def test_the_example_keeps_the_systemd_units_cache_location(monkeypatch):
    # What the unit does: Environment=XDG_CACHE_HOME=/var/lib/skeletond/cache, --config <the example>.
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/lib/skeletond/cache")
    config = load_config(EXAMPLE, environ={})
    assert config == load_config(None, environ={})
    for path in (config.models.dir, config.engine.engine_dir, config.store.path, config.models.convert_venv):
        assert str(path).startswith("/var/lib/skeletond/cache/"), path


def test_the_documented_defaults_are_the_defaults(monkeypatch):
    """Uncommenting a documented line as it stands changes nothing (paths: as without XDG_CACHE_HOME)."""
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    # Keys whose example value is an illustration, not the default (none, or derived from the hostname).
    illustrations = {"url", "client_id", "daemon_id", "username", "password", "ca_file", "cert_file",
                     "key_file", "token", "default_kiosk", "shared_group", "key_dir", "public_url"}
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        setting = re.match(r"^#\s?(([a-z_]+)\s*=.*)$", line)
        if setting and setting.group(2) not in illustrations:
            lines.append(setting.group(1))
        elif re.match(r"^\[[a-z_]+\]\s*$", line):
            lines.append(line)
    reference = Config()
    for section, values in tomllib.loads("\n".join(lines)).items():
        for key, value in values.items():
            default = getattr(getattr(reference, section), key)
            if isinstance(default, Path):
                value = Path(value).expanduser()
            assert value == default, f"[{section}] {key}: example {value!r}, default {default!r}"
