"""Settings: clear one-sentence errors, secrets kept out of logs."""

from __future__ import annotations

import re

import pytest

from handraise.config import ConfigError, Settings
from handraise.phone.fastmedia import read_batch

GOOD = {
    "HANDRAISE_PUBLIC_URL": "https://hands.example.org/",
    "HANDRAISE_SECRET_KEY": "s" * 32,
    "HANDRAISE_HOST_PASSWORD": "correct horse",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "a" * 32,
}


def test_good_settings_are_read() -> None:
    s = Settings.from_env(GOOD, required=tuple(GOOD))
    assert s.public_url == "https://hands.example.org"
    assert s.redis_url is None
    assert s.twilio_api_url == "https://api.twilio.com"
    assert Settings.from_env({**GOOD, "HANDRAISE_RECONCILE_INTERVAL": "45"}).reconcile_interval_s == 45
    assert Settings.from_env(GOOD).twilio_timeout_s == 10
    assert Settings.from_env({**GOOD, "HANDRAISE_TWILIO_TIMEOUT": "2.5"}).twilio_timeout_s == 2.5
    for url in ("redis+cluster://10.0.0.5:7000", "rediss+cluster://:pw@redis.example.org:7000/0"):
        assert Settings.from_env({**GOOD, "HANDRAISE_REDIS_URL": url}).redis_url == url


def test_the_media_read_batch_is_auto_unless_set() -> None:
    for env, batch, streams in (({}, 4, 1), ({}, 4, 499), ({}, 3, 500), ({}, 3, 1000),
                                ({"HANDRAISE_MEDIA_READ_BATCH": "Auto"}, 3, 2000),
                                ({"HANDRAISE_MEDIA_READ_BATCH": "5"}, 5, 1000),
                                ({"HANDRAISE_MEDIA_READ_BATCH": "1"}, 1, 10)):
        setting = Settings.from_env({**GOOD, **env}).media_read_batch
        assert read_batch(setting, streams) == batch, (env, streams)


def test_secrets_never_appear_in_repr() -> None:
    text = repr(Settings.from_env(GOOD))
    for secret in ("s" * 32, "correct horse", "a" * 32):
        assert secret not in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HANDRAISE_PUBLIC_URL", "hands.example.org"),
        ("HANDRAISE_PUBLIC_URL", "https://x.org/?a=1"),
        ("HANDRAISE_REDIS_URL", "http://localhost:6379"),
        ("HANDRAISE_REDIS_URL", "redis+cluster://localhost:7000/2"),  # a cluster has only db 0
        ("HANDRAISE_SECRET_KEY", "tiny-secret"),
        ("HANDRAISE_HOST_PASSWORD", "1234"),
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_AUTH_TOKEN", "not a token"),
        ("HANDRAISE_TWILIO_API_URL", "ftp://twilio"),
        ("HANDRAISE_EVENTS_MAXLEN", "ten"),
        ("HANDRAISE_LOG_LEVEL", "LOUD"),
        ("HANDRAISE_RECONCILE_INTERVAL", "0.1"),
        ("HANDRAISE_RECONCILE_INTERVAL", "9999"),
        ("HANDRAISE_TWILIO_TIMEOUT", "0"),
        ("HANDRAISE_TWILIO_TIMEOUT", "soon"),
        ("HANDRAISE_MEDIA_READ_BATCH", "0"),
        ("HANDRAISE_MEDIA_READ_BATCH", "6"),
        ("HANDRAISE_MEDIA_READ_BATCH", "often"),
    ],
)
def test_a_malformed_setting_stops_with_one_sentence_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**GOOD, name: value})
    message = str(info.value)
    assert message.startswith(name)
    assert "should hold" in message
    assert len(re.findall(r"[.!?](\s|$)", message)) == 1, message
    if name in {"HANDRAISE_SECRET_KEY", "TWILIO_AUTH_TOKEN", "HANDRAISE_HOST_PASSWORD"}:
        assert value not in message


def test_a_missing_required_setting_names_the_variable() -> None:
    env = {k: v for k, v in GOOD.items() if k != "TWILIO_AUTH_TOKEN"}
    with pytest.raises(ConfigError, match=r"^TWILIO_AUTH_TOKEN is not set: it should hold"):
        Settings.from_env(env, required=("TWILIO_AUTH_TOKEN",))
    assert Settings.from_env(env).twilio_auth_token is None  # optional elsewhere
