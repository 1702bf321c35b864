"""Types of the C module ``_wsread.c`` (the media streams' WebSocket reader)."""

import socket
from typing import overload

import numpy as np
import numpy.typing as npt

MAX_FRAME_BYTES: int

#: (handle, audio or None, media messages in it, other messages or None, end or None)
_Polled = tuple[int, bytes | None, int, list[bytes] | None, int | None]

class Reader:
    def __init__(self, max_message: int = 65536) -> None: ...
    def __len__(self) -> int: ...
    def add(self, sock: socket.socket | int, /) -> int: ...
    def fast(self, handle: int, tails: tuple[bytes, ...], slot: int = -1, /) -> None: ...
    def closing(self, handle: int, /) -> None: ...
    def remove(self, handle: int, /) -> None: ...
    @overload
    def poll(self) -> list[_Polled]: ...
    @overload
    def poll(
        self, audio: npt.NDArray[np.uint8], fill: npt.NDArray[np.int64],
        frames: npt.NDArray[np.int64], dropped: npt.NDArray[np.int64], /,
    ) -> list[_Polled]: ...
