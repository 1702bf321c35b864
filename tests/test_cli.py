"""The handraise command, run as a newcomer would: no Redis installed, embedded server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


def handraise(
    *args: str, data_dir: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # PATH holds only the virtualenv: no system redis-server, so the bundled one is used.
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(data_dir),
        "HANDRAISE_DATA_DIR": str(data_dir / "data"),
        **(extra_env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "handraise.cli", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_rooms_create_list_show_close_with_no_redis_installed(tmp_path: Path) -> None:
    created = handraise("rooms", "create", "--name", "Standup", "--json", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    room = json.loads(created.stdout)
    assert room["name"] == "Standup"
    assert room["access_code"] != room["host_code"]
    assert len(room["access_code"]) == len(room["host_code"]) == 6

    listed = handraise("rooms", "list", data_dir=tmp_path)
    assert room["id"] in listed.stdout and "Standup" in listed.stdout

    shown = handraise("rooms", "show", room["id"], "--json", data_dir=tmp_path)
    assert json.loads(shown.stdout)["room"]["access_code"] == room["access_code"]
    assert json.loads(shown.stdout)["queue"] == []

    text = handraise("rooms", "show", room["id"], data_dir=tmp_path)
    assert "speaker: (nobody)" in text.stdout

    closed = handraise("rooms", "close", room["id"], data_dir=tmp_path)
    assert closed.returncode == 0 and "closed" in closed.stdout
    assert room["id"] not in handraise("rooms", "list", data_dir=tmp_path).stdout
    # No embedded server is left running after the commands finish.
    assert not (tmp_path / "data" / "redis.sock").exists()


def test_showing_an_unknown_room_says_so(tmp_path: Path) -> None:
    shown = handraise("rooms", "show", "rnothere", data_dir=tmp_path)
    assert shown.returncode == 1
    assert "There is no room 'rnothere'" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_serve_without_twilio_credentials_stops_with_one_sentence(tmp_path: Path) -> None:
    result = handraise("serve", data_dir=tmp_path)
    assert result.returncode == 2
    assert re.match(r"handraise: [A-Z_]+ is not set: it should hold [^\n]+\.\n$", result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("bad", ["redis://[::1", "http://x"])
def test_a_bad_redis_url_is_reported_not_crashed(tmp_path: Path, bad: str) -> None:
    result = handraise("rooms", "list", data_dir=tmp_path, extra_env={"HANDRAISE_REDIS_URL": bad})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "HANDRAISE_REDIS_URL" in result.stderr or "Redis" in result.stderr


def test_rooms_update_and_settings_change_and_list_every_setting(tmp_path: Path) -> None:
    created = handraise("rooms", "create", "--name", "Standup", "--set", "announce_web=yes", "--json",
                        data_dir=tmp_path)
    room = json.loads(created.stdout)
    assert created.returncode == 0 and room["announce_web"] is True
    updated = handraise("rooms", "update", room["id"], "--set", "keypad_mode=star", "--name", "Retro",
                        data_dir=tmp_path)
    assert updated.returncode == 0, updated.stderr
    assert "updated: Retro" in updated.stdout and re.search(r"keypad_mode\s+star", updated.stdout)
    refused = handraise("rooms", "update", room["id"], "--set", "keypad_mode=loud", data_dir=tmp_path)
    assert refused.returncode == 1 and "keypad_mode must be one of stream, star" in refused.stderr
    malformed = handraise("rooms", "update", room["id"], "--set", "keypad_mode", data_dir=tmp_path)
    assert malformed.returncode == 1 and "--set needs NAME=VALUE" in malformed.stderr
    listed = handraise("rooms", "settings", data_dir=tmp_path)
    assert "keypad_mode  (stream | star; default stream)" in listed.stdout
    assert "announce_web  (yes | no; default no)" in listed.stdout
