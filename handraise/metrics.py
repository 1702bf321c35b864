"""Operational metrics: counters and latency histograms of every process, summed in Redis.

Each process counts into memory (no I/O on the request path) and adds what it counted to
one Redis hash every :data:`FLUSH_S` seconds (``HINCRBY``/``HINCRBYFLOAT``, one pipeline), so
``GET /metrics`` shows the totals of all processes whichever one answers — ``serve
--workers N`` spreads scrapes over the processes like every other request. The gauges
(open rooms, participants, hands, media streams) are read from Redis when scraped.

Pure except :meth:`Metrics.flush`, which takes the Redis client. The text is Prometheus'
exposition format 0.0.4.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

from .store import Redis, global_key

FLUSH_S = 5.0
#: Latency buckets (seconds): Twilio gives up on a webhook at 15 s.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)

HELP = {
    "handraise_http_request_seconds": ("histogram", "Time to answer an HTTP request, by group "
                                       "(voice = Twilio webhooks)."),
    "handraise_http_requests_total": ("counter", "HTTP requests answered, by group and status class."),
    "handraise_twilio_rest_seconds": ("histogram", "Time of an outbound Twilio REST call, by outcome."),
    "handraise_redis_errors_total": ("counter", "Requests or jobs that found Redis unavailable "
                                     "(each logs one line), by module."),
}

_FIELD = re.compile(r"^(?P<name>[a-z_]+)\|(?P<labels>[^|]*)$")


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class Metrics:
    """One process's counts since its last flush."""

    def __init__(self) -> None:
        self._counts: defaultdict[str, float] = defaultdict(float)

    def count(self, name: str, n: float = 1, **labels: str) -> None:
        self._counts[f"{name}|{_labels(labels)}"] += n

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """One latency into the histogram ``name``."""
        base = _labels(labels)
        sep = "," if base else ""
        for le in BUCKETS:  # every bucket, 0 too: a histogram lists them all
            self._counts[f"{name}_bucket|{base}{sep}le={le}"] += 1 if seconds <= le else 0
        self._counts[f"{name}_bucket|{base}{sep}le=+Inf"] += 1
        self._counts[f"{name}_sum|{base}"] += seconds
        self._counts[f"{name}_count|{base}"] += 1

    def take(self) -> dict[str, float]:
        """What was counted since the last take (and forget it)."""
        counts, self._counts = dict(self._counts), defaultdict(float)
        return counts

    async def flush(self, redis: Redis) -> None:
        """Add this process's counts to the shared totals. Counts are given back on failure."""
        counts = self.take()
        if not counts:
            return
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for field, value in counts.items():
                    if value == int(value):
                        pipe.hincrby(global_key("metrics"), field, int(value))
                    else:
                        pipe.hincrbyfloat(global_key("metrics"), field, value)
                await pipe.execute()
        except BaseException:
            for field, value in counts.items():
                self._counts[field] += value
            raise


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return str(int(value)) if value == int(value) else repr(value)


def render(totals: Mapping[str, str], scraped: Iterable[tuple[str, str, str, float]]) -> str:
    """The exposition text: ``totals`` from the shared hash, and values read at scrape time
    as (name, type, help, value)."""
    lines: list[str] = []
    for name, kind, help_text, value in scraped:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]
    series: defaultdict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for field, raw in totals.items():
        found = _FIELD.match(field)
        if found is None:
            continue
        name = found["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in HELP else name
        if family not in HELP:
            continue
        series[family].append((name, found["labels"], float(raw)))
    for family, (kind, help_text) in HELP.items():
        lines += [f"# HELP {family} {help_text}", f"# TYPE {family} {kind}"]

        def order(item: tuple[str, str, float]) -> tuple[str, str, float]:
            name, labels, _ = item
            le = re.search(r"le=([^,]+)", labels)
            bound = math.inf if le is None or le[1] == "+Inf" else float(le[1])
            return re.sub(r",?le=[^,]+", "", labels), name, bound

        for name, labels, value in sorted(series.get(family, []), key=order):
            pairs = [p.split("=", 1) for p in labels.split(",") if p]
            text = ",".join(f'{k}="{v}"' for k, v in pairs)
            lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def app_metrics(app: object) -> Metrics:
    """The app's :class:`Metrics` (made on first use; ``app`` is the Quart app)."""
    extensions: dict[str, object] = app.extensions  # type: ignore[attr-defined]
    found = extensions.get("handraise_metrics")
    if not isinstance(found, Metrics):
        found = extensions["handraise_metrics"] = Metrics()
    return found
