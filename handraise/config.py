"""Typed settings from the environment.

Every variable is read and checked in one place. A missing or malformed value stops
start-up with :class:`ConfigError`, whose message is one sentence naming the variable and
what it should hold. Secrets never appear in ``repr`` or logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_TWILIO_API_URL = "https://api.twilio.com"
DEFAULT_MEDIA_READ_BATCH = 0
"""Detection ticks between reads of the media sockets; 0 is "auto": 4, and 3 for a process
holding 500 streams or more (:func:`handraise.phone.fastmedia.read_batch`; bench/media.py
decided it: README)."""


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what it should hold."""


def _default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "handraise"


@dataclass(frozen=True)
class Settings:
    """Everything handraise reads from its environment."""

    public_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = field(default_factory=lambda: _default_data_dir(os.environ))
    secret_key: str | None = field(default=None, repr=False)
    host_password: str | None = field(default=None, repr=False)
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_api_url: str = DEFAULT_TWILIO_API_URL
    events_maxlen: int = 10_000
    log_level: str = "INFO"
    #: How often (seconds) rooms with callers outside the conference are checked with Twilio.
    reconcile_interval_s: float = 20.0
    #: How long (seconds) a call to Twilio's REST API may take before the host is told it failed.
    twilio_timeout_s: float = 10.0
    #: The companion page's address as callers hear it; default: the public URL + /join.
    companion_url: str | None = None
    #: Consent rooms: how long an invitation to speak waits for its answer (seconds).
    invite_timeout_s: float = 15.0
    #: Speaking limit: the cue comes this long before the limit; auto-mute this long after it.
    speak_warn_s: float = 15.0
    speak_grace_s: float = 10.0
    #: How often each process looks for invitations and speaking limits that are due.
    timer_interval_s: float = 0.5
    #: Who may read GET /metrics: "local" (this machine, not through a proxy), "host"
    #: (a signed-in host or an API token) or "off".
    metrics_access: str = "local"
    #: Detection ticks (20 ms) between two reads of the media sockets by ``serve`` (1: every tick).
    media_read_batch: int = DEFAULT_MEDIA_READ_BATCH

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, required: tuple[str, ...] = ()
    ) -> Settings:
        """Read settings from ``env`` (default ``os.environ``).

        ``required`` lists environment variable names that must be present for the
        command being run (``handraise serve`` needs the Twilio credentials, the CLI's
        room commands need none).
        """
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            if value is None or value.strip() == "":
                if name in required:
                    raise ConfigError(f"{name} is not set: it should hold {_WHAT[name]}.")
                return None
            return value.strip()

        public_url = get("HANDRAISE_PUBLIC_URL")
        if public_url is not None:
            public_url = _check_http_url("HANDRAISE_PUBLIC_URL", public_url).rstrip("/")
        redis_url = get("HANDRAISE_REDIS_URL")
        if redis_url is not None:
            try:
                scheme = urlsplit(redis_url).scheme
                urlsplit(redis_url).port  # noqa: B018 - raises on a malformed host or port
            except ValueError:
                scheme = ""
            if scheme.endswith("+cluster") and urlsplit(redis_url).path not in {"", "/", "/0"}:
                scheme = ""  # a cluster has only database 0
            if scheme not in {"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"}:
                raise ConfigError(
                    f"HANDRAISE_REDIS_URL is {redis_url!r}: it should hold {_WHAT['HANDRAISE_REDIS_URL']}."
                )
        data_dir_raw = get("HANDRAISE_DATA_DIR")
        data_dir = Path(data_dir_raw).expanduser() if data_dir_raw else _default_data_dir(env)
        secret_key = get("HANDRAISE_SECRET_KEY")
        if secret_key is not None and len(secret_key) < 16:
            raise ConfigError(
                f"HANDRAISE_SECRET_KEY is too short: it should hold {_WHAT['HANDRAISE_SECRET_KEY']}."
            )
        host_password = get("HANDRAISE_HOST_PASSWORD")
        if host_password is not None and len(host_password) < 8:
            raise ConfigError(
                "HANDRAISE_HOST_PASSWORD is too short: it should hold "
                f"{_WHAT['HANDRAISE_HOST_PASSWORD']}."
            )
        account_sid = get("TWILIO_ACCOUNT_SID")
        if account_sid is not None and not re.fullmatch(r"AC[0-9a-fA-F]{32}", account_sid):
            raise ConfigError(
                f"TWILIO_ACCOUNT_SID is malformed: it should hold {_WHAT['TWILIO_ACCOUNT_SID']}."
            )
        auth_token = get("TWILIO_AUTH_TOKEN")
        if auth_token is not None and not re.fullmatch(r"[0-9a-zA-Z]{32}", auth_token):
            raise ConfigError(
                f"TWILIO_AUTH_TOKEN is malformed: it should hold {_WHAT['TWILIO_AUTH_TOKEN']}."
            )
        api_url = get("HANDRAISE_TWILIO_API_URL") or DEFAULT_TWILIO_API_URL
        api_url = _check_http_url("HANDRAISE_TWILIO_API_URL", api_url).rstrip("/")
        maxlen_raw = get("HANDRAISE_EVENTS_MAXLEN")
        events_maxlen = 10_000
        if maxlen_raw is not None:
            if not maxlen_raw.isdigit() or int(maxlen_raw) < 100:
                raise ConfigError(
                    f"HANDRAISE_EVENTS_MAXLEN is {maxlen_raw!r}: it should hold "
                    f"{_WHAT['HANDRAISE_EVENTS_MAXLEN']}."
                )
            events_maxlen = int(maxlen_raw)
        log_level = (get("HANDRAISE_LOG_LEVEL") or "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(
                f"HANDRAISE_LOG_LEVEL is {log_level!r}: it should hold {_WHAT['HANDRAISE_LOG_LEVEL']}."
            )
        companion_url = get("HANDRAISE_COMPANION_URL")
        if companion_url is not None:
            companion_url = _check_http_url("HANDRAISE_COMPANION_URL", companion_url)
        interval_raw = get("HANDRAISE_RECONCILE_INTERVAL")
        reconcile_interval_s = 20.0
        if interval_raw is not None:
            try:
                reconcile_interval_s = float(interval_raw)
            except ValueError:
                reconcile_interval_s = -1.0
            if not 1.0 <= reconcile_interval_s <= 3600.0:
                raise ConfigError(
                    f"HANDRAISE_RECONCILE_INTERVAL is {interval_raw!r}: it should hold "
                    f"{_WHAT['HANDRAISE_RECONCILE_INTERVAL']}."
                )
        timers = {
            name: _seconds(get(var), var, default, low, high)
            for name, var, default, low, high in (
                ("invite_timeout_s", "HANDRAISE_INVITE_TIMEOUT", 15.0, 0.1, 300.0),
                ("speak_warn_s", "HANDRAISE_SPEAK_WARNING", 15.0, 0.0, 600.0),
                ("speak_grace_s", "HANDRAISE_SPEAK_GRACE", 10.0, 0.0, 600.0),
                ("timer_interval_s", "HANDRAISE_TIMER_INTERVAL", 0.5, 0.05, 10.0),
            )
        }
        twilio_timeout_s = _seconds(get("HANDRAISE_TWILIO_TIMEOUT"), "HANDRAISE_TWILIO_TIMEOUT",
                                    10.0, 0.5, 60.0)
        metrics_access = (get("HANDRAISE_METRICS") or "local").lower()
        if metrics_access not in {"local", "host", "off"}:
            raise ConfigError(
                f"HANDRAISE_METRICS is {metrics_access!r}: it should hold {_WHAT['HANDRAISE_METRICS']}."
            )
        batch_raw = (get("HANDRAISE_MEDIA_READ_BATCH") or "auto").strip().lower()
        if batch_raw == "auto":
            batch_raw = str(DEFAULT_MEDIA_READ_BATCH)
        elif not batch_raw.isdigit() or not 1 <= int(batch_raw) <= 5:
            raise ConfigError(f"HANDRAISE_MEDIA_READ_BATCH is {batch_raw!r}: it should hold "
                              f"{_WHAT['HANDRAISE_MEDIA_READ_BATCH']}.")
        return cls(
            **timers,
            media_read_batch=int(batch_raw),
            metrics_access=metrics_access,
            public_url=public_url,
            redis_url=redis_url,
            data_dir=data_dir,
            secret_key=secret_key,
            host_password=host_password,
            twilio_account_sid=account_sid,
            twilio_auth_token=auth_token,
            twilio_api_url=api_url,
            events_maxlen=events_maxlen,
            log_level=log_level,
            reconcile_interval_s=reconcile_interval_s,
            twilio_timeout_s=twilio_timeout_s,
            companion_url=companion_url,
        )


def _seconds(raw: str | None, name: str, default: float, low: float, high: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name} is {raw!r}: it should hold {_WHAT[name]}.")
    return value


def _check_http_url(name: str, value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed host or port
    except ValueError:
        raise ConfigError(f"{name} is {value!r}: it should hold {_WHAT[name]}.") from None
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query:
        raise ConfigError(f"{name} is {value!r}: it should hold {_WHAT[name]}.")
    return value


_WHAT = {
    "HANDRAISE_MEDIA_READ_BATCH": "auto (the default: 4, and 3 in a process holding 500 "
    "streams or more) or a whole number from 1 to 5: every how many 20 ms detection ticks "
    "handraise serve reads the media streams' sockets (more: less CPU, up to 20 ms more "
    "latency each)",
    "HANDRAISE_METRICS": "local (GET /metrics from this machine only, not through a proxy), "
    "host (a signed-in host or an API token) or off",
    "HANDRAISE_PUBLIC_URL": "the public base URL Twilio reaches this server at, "
    "such as https://handraise.example.org (no query string)",
    "HANDRAISE_REDIS_URL": "a Redis URL such as redis://localhost:6379/0 or "
    "unix:///run/redis.sock (redis+cluster://host:port for a Redis Cluster), or be unset to "
    "use the embedded Redis",
    "HANDRAISE_DATA_DIR": "a directory for the embedded Redis data",
    "HANDRAISE_SECRET_KEY": "a random string of at least 16 characters that signs host "
    "sessions (for example the output of: python -c 'import secrets; print(secrets.token_hex(32))')",
    "HANDRAISE_HOST_PASSWORD": "the password hosts use to log in, at least 8 characters",
    "TWILIO_ACCOUNT_SID": "your Twilio Account SID: AC followed by 32 hexadecimal characters",
    "TWILIO_AUTH_TOKEN": "your Twilio Auth Token: 32 letters and digits",
    "HANDRAISE_TWILIO_API_URL": "the base URL of Twilio's REST API, https://api.twilio.com "
    "unless you point it at the emulator",
    "HANDRAISE_TWILIO_TIMEOUT": "a number of seconds from 0.5 to 60, how long a call to "
    "Twilio's REST API (a host action) may take before it is reported as failed (default 10)",
    "HANDRAISE_EVENTS_MAXLEN": "a whole number of at least 100, how many events each room keeps",
    "HANDRAISE_LOG_LEVEL": "one of DEBUG, INFO, WARNING, ERROR",
    "HANDRAISE_COMPANION_URL": "the address callers are told for the companion page, such as "
    "https://hr.example.org/join (a shorter one of your own that leads there)",
    "HANDRAISE_RECONCILE_INTERVAL": "a number of seconds from 1 to 3600, how often rooms with "
    "callers outside the conference are checked with Twilio (default 20)",
    "HANDRAISE_INVITE_TIMEOUT": "a number of seconds from 0.1 to 300, how long an invitation to "
    "speak waits for its answer in consent rooms (default 15)",
    "HANDRAISE_SPEAK_WARNING": "a number of seconds from 0 to 600, how long before the speaking "
    "limit the speaker hears a cue (default 15)",
    "HANDRAISE_SPEAK_GRACE": "a number of seconds from 0 to 600, how long after the speaking "
    "limit an auto-muted speaker is muted (default 10)",
    "HANDRAISE_TIMER_INTERVAL": "a number of seconds from 0.05 to 10, how often each process "
    "looks for due invitations and speaking limits (default 0.5)",
}
