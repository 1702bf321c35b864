"""Keypad command decoder: DTMF digit events in, commands such as ``*1`` (raise) out.

Pure and deterministic: time comes from the events themselves (milliseconds of the
caller's audio stream), never from a clock.

Rules
-----
* A command is a short key sequence (``*1`` raise, ``*2`` lower by default; a room may
  choose its own mapping).
* Each key must start within ``timeout_ms`` (3 s) of the end of the key before it,
  otherwise the sequence starts again.
* A held key is one press, and so is a bounced one: the same key starting again within
  ``bounce_ms`` of its release.
* Extra leading keys do not matter: ``**1`` and ``#*1`` are ``*1``.
* Keys that cannot lead to a command are dropped (logged at debug).
* A command fires when its last key *starts* (a :class:`~handraise.dsp.dtmf.DigitStart`
  notice), so the caller is answered while still pressing; the end event of the same
  press is then ignored. Decoders fed only complete
  :class:`~handraise.dsp.dtmf.DigitEvent` objects work the same, a little later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from handraise.dsp.dtmf import DigitEvent, DigitStart
from handraise.dsp.tones import KEYS

__all__ = ["DEFAULT_COMMANDS", "HOST_ONLY", "KeyCommand", "KeyDecoder", "room_commands",
           "star_digits"]

logger = logging.getLogger(__name__)

DEFAULT_COMMANDS: Mapping[str, str] = MappingProxyType({"*1": "raise", "*2": "lower"})
"""Key sequence -> command name."""

#: The command a participant's table gives the host's keys: a polite "that key is for the
#: host", never a host action.
HOST_ONLY = "host_only"
_HOST = "host_"
#: Commands the host's own table keeps besides the host's (``host_*``) ones.
_HOST_ALSO = frozenset({"help"})


def room_commands(keys: Mapping[str, str], *, host: bool) -> dict[str, str]:
    """One caller's key table from a room's keys settings.

    Parameters
    ----------
    keys : mapping of str to str
        Setting name -> key sequence, for every setting of kind "keys" (``{"raise_keys":
        "*1", "host_done_keys": "*6", ...}``). A command is named after its setting:
        ``raise_keys`` -> ``"raise"``, ``host_done_keys`` -> ``"host_done"``.
    host : bool
        The host's table: the ``host_*`` commands and help. A participant's: every other
        command, and the host's keys as :data:`HOST_ONLY`.

    Returns
    -------
    dict of str to str
        Key sequence -> command name, for :class:`KeyDecoder`.
    """
    table: dict[str, str] = {}
    for name, seq in keys.items():
        command = name.removesuffix("_keys")
        if command.startswith(_HOST):
            table[seq] = command if host else HOST_ONLY
        elif not host or command in _HOST_ALSO:
            table[seq] = command
    return table


def star_digits(commands: Mapping[str, str]) -> dict[str, str]:
    """The commands a star-mode menu reads: ``*`` steps out, the next key picks one.

    ``{"*1": "raise", "#3": "x"}`` -> ``{"1": "raise"}``: only sequences of ``*`` and one key
    can be typed that way.
    """
    return {seq[1:]: name for seq, name in commands.items() if len(seq) == 2 and seq[0] == "*"}


@dataclass(frozen=True, slots=True)
class KeyCommand:
    """A decoded keypad command.

    Attributes
    ----------
    name : str
        The command (``"raise"``, ``"lower"``, or a room's own).
    keys : str
        The sequence that produced it, e.g. ``"*1"``.
    at_ms : float
        Start of its last key, in ms of the caller's stream.
    """

    name: str
    keys: str
    at_ms: float


@dataclass(slots=True)
class _Press:
    digit: str
    start_ms: float
    end_ms: float | None


class KeyDecoder:
    """Turn one caller's digit events into commands.

    Parameters
    ----------
    commands : mapping of str to str, optional
        Key sequence -> command name; default :data:`DEFAULT_COMMANDS`. Sequences use
        ``0-9 * # A-D``; none may be a prefix of another.
    timeout_ms : float
        Longest pause between the end of one key and the start of the next.
    bounce_ms : float
        A repeat of the same key starting sooner than this after its release is the
        same press.
    label : str
        Names the caller in log lines (room and participant ids; never a number).

    Raises
    ------
    ValueError
        If a sequence is empty, has a character that is not a key, or is a prefix of
        another sequence.
    """

    def __init__(
        self,
        commands: Mapping[str, str] = DEFAULT_COMMANDS,
        *,
        timeout_ms: float = 3000.0,
        bounce_ms: float = 60.0,
        label: str = "",
    ) -> None:
        table: dict[str, str] = {}
        for seq, name in commands.items():
            norm = seq.upper()
            if not norm or any(ch not in KEYS for ch in norm):
                raise ValueError(f"command sequence {seq!r} must be DTMF keys (0-9 * # A-D)")
            table[norm] = name
        for a in table:
            for b in table:
                if a != b and b.startswith(a):
                    raise ValueError(f"command {a!r} is a prefix of {b!r}; {b!r} could never fire")
        self.commands: Mapping[str, str] = MappingProxyType(table)
        self._prefixes = {seq[:i] for seq in table for i in range(1, len(seq))}
        self.timeout_ms = float(timeout_ms)
        self.bounce_ms = float(bounce_ms)
        self.label = label
        self._buffer = ""
        self._last: _Press | None = None
        self._fired_on: _Press | None = None

    def reset(self) -> None:
        """Forget any partly entered sequence."""
        self._buffer = ""
        self._last = None

    def feed(self, event: DigitStart | DigitEvent) -> KeyCommand | None:
        """Take one event from the detector.

        Parameters
        ----------
        event : DigitStart or DigitEvent
            In time order.

        Returns
        -------
        command : KeyCommand or None
            The command completed by this event, if any.
        """
        end = event.end_ms if isinstance(event, DigitEvent) else None
        last = self._last
        if last is not None and last.digit == event.digit:
            same_press = (
                event.start_ms == last.start_ms
                or last.end_ms is None
                or event.start_ms - last.end_ms < self.bounce_ms
            )
            if same_press:
                if end is not None:
                    last.end_ms = end
                return None
        if last is not None:
            since = event.start_ms - (last.end_ms if last.end_ms is not None else last.start_ms)
            if since > self.timeout_ms and self._buffer:
                logger.debug("keypad %s: %r timed out", self.label, self._buffer)
                self._buffer = ""
        press = _Press(event.digit, event.start_ms, end)
        self._last = press
        return self._push(press)

    def feed_all(self, events: Iterable[DigitStart | DigitEvent]) -> list[KeyCommand]:
        """Feed events in order; return the commands they complete."""
        out = []
        for ev in events:
            cmd = self.feed(ev)
            if cmd is not None:
                out.append(cmd)
        return out

    def _push(self, press: _Press) -> KeyCommand | None:
        buf = self._buffer + press.digit
        for i in range(len(buf)):
            if buf[i:] in self.commands:
                seq = buf[i:]
                if i:
                    logger.debug("keypad %s: ignored %r before %r", self.label, buf[:i], seq)
                self._buffer = ""
                name = self.commands[seq]
                logger.debug("keypad %s: %r -> %s", self.label, seq, name)
                return KeyCommand(name, seq, press.start_ms)
        keep = next((buf[i:] for i in range(len(buf)) if buf[i:] in self._prefixes), "")
        dropped = buf[: len(buf) - len(keep)]
        if dropped:
            logger.debug("keypad %s: ignored %r", self.label, dropped)
        self._buffer = keep
        return None
