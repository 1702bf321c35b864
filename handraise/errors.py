"""The one error family of the domain; edges turn it into a 4xx, a TwiML message or a CLI line."""

from __future__ import annotations


class HandraiseError(Exception):
    """A request the domain refuses, with a message fit to show to the person who asked."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(HandraiseError):
    status = 404


class Invalid(HandraiseError):
    status = 422


class Conflict(HandraiseError):
    status = 409
