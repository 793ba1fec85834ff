"""The device-wide limit on conversations generating at once.

``frontend.max_concurrent_sessions`` (seed: 5) bounds how many answers this
box streams at the same time, whether they come from the web chat or from the
local OpenAI endpoint. One over the limit is never refused or dropped: it
waits in a FIFO queue, and the caller can show its place ("queued") until a
slot frees.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Ticket:
    """One request's claim on a slot. Use ``await ticket.wait()`` then ``ticket.release()``."""

    def __init__(self, limiter: SessionLimiter) -> None:
        self._limiter = limiter
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.granted = False
        self._released = False

    @property
    def position(self) -> int:
        """1-based place in the queue; 0 once running."""
        if self.granted:
            return 0
        try:
            return self._limiter._queue.index(self) + 1
        except ValueError:
            return 0

    async def wait(self) -> None:
        if self.granted:
            return
        try:
            await self._future
        except asyncio.CancelledError:
            # The client went away while queued: leave the line without taking a slot.
            self._limiter._leave(self)
            raise

    async def wait_up_to(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for the slot; True once granted. Cancelling leaves the queue via release()."""
        if self.granted:
            return True
        try:
            # shield: a timeout must not cancel the grant future itself.
            await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.granted:
            self._limiter._free()
        else:
            self._limiter._leave(self)

    def _grant(self) -> None:
        self.granted = True
        if not self._future.done():
            self._future.set_result(None)


class SessionLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._queue: deque[Ticket] = deque()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def ticket(self) -> Ticket:
        """Claim a slot now if one is free, else join the queue."""
        t = Ticket(self)
        if self.active < self.limit and not self._queue:
            self.active += 1
            t._grant()
        else:
            self._queue.append(t)
        return t

    def _free(self) -> None:
        self.active -= 1
        self._wake()

    def _leave(self, t: Ticket) -> None:
        try:
            self._queue.remove(t)
        except ValueError:
            if t.granted and not t._released:
                # Granted between the cancel and this call: hand the slot on.
                t._released = True
                self._free()

    def _wake(self) -> None:
        while self._queue and self.active < self.limit:
            nxt = self._queue.popleft()
            self.active += 1
            nxt._grant()

    def snapshot(self) -> dict[str, int]:
        return {"limit": self.limit, "active": self.active, "queued": len(self._queue)}
