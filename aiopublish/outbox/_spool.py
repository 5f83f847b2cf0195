"""The spool: publishes that cannot reach the broker in time are written to an outbox instead, and drained later.

`Publisher(url, spool=Outbox("sqlite:///spool.db"))`: when a publish cannot be
confirmed before its timeout because the broker is unreachable (a lost or refused
connection, or a timeout while not connected; never the broker's own refusal, never
a blocked connection) the encoded message goes to the spool and publish() returns
status "spooled". A relay running in the publisher drains the spool whenever the
broker answers, including what an earlier process left. While the spool holds
messages, new publishes join it, so nothing overtakes a spooled message (what an
earlier process left is drained alongside the first publishes after start-up).

Once a publish was spooled because the broker is unreachable (or connect() found it
so), publishes go straight to the spool, without waiting on the broker, until the
relay has published from the spool again. With a spool, connect() does not raise
when the broker is unreachable: it logs a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._engine import Engine
from .._exceptions import ConnectionFailed, PublishTimeout, is_retriable
from .._options import Options, Prepared
from .._tracing import NoRecord
from ._relay import Relay

if TYPE_CHECKING:
    from .._publisher import Publisher
    from ._outbox import Outbox

__all__ = ["Spool"]

log = logging.getLogger("aiopublish")

# The part of a publish's timeout kept for writing to the spool (at most this many seconds).
_SPOOL_MARGIN = 1.0
_SPOOL_SHARE = 0.2


def unreachable(exc: BaseException, engine: Engine) -> bool:
    """Whether `exc` says the broker could not be reached (spool it), not that it refused the message."""
    if isinstance(exc, ConnectionFailed):
        return is_retriable(exc)
    if isinstance(exc, PublishTimeout):
        cause = exc.__cause__
        if cause is not None:
            return isinstance(cause, ConnectionFailed) and is_retriable(cause)
        link = engine.link
        return link.ready_channel() is None and not link.is_blocked
    return False


class Spool:
    """A publisher's spool, a layer over its engine: the outbox it writes to and the relay that drains it."""

    def __init__(self, outbox: Outbox, publisher: Publisher, engine: Callable[[], Engine]) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.engine = engine  # the publisher's engine now (a new one in each event loop)
        self.relay: Relay | None = None
        self._trying: set[asyncio.Future[None]] = set()
        # While the broker is known unreachable: the relay's `relayed` count then. Publishes go straight to
        # the spool until the relay has confirmed more (the relay is the one that finds the broker back).
        self._outage_mark: int | None = None

    def start(self) -> None:
        """Start draining (idempotent): at connect() and at the first publish."""
        if self.relay is None:
            self.relay = Relay(self.outbox, self.publisher)
            self.relay.start()

    async def connect(self) -> None:
        """Start draining, then connect; an unreachable broker is logged, not raised (publishes get spooled)."""
        self.start()
        try:
            await self.engine().link.channel()
        except ConnectionFailed as exc:
            if not is_retriable(exc):
                raise
            log.warning("the broker is unreachable (%s): publishes go to the spool until it answers", exc)
            self._mark_outage()

    async def stop(self, grace: float) -> None:
        """Stop draining (the batch under way may take `grace` seconds to settle) and close the outbox."""
        if self.relay is not None:
            await self.relay.stop(grace)
        await self.outbox.close()

    @property
    def has_backlog(self) -> bool:
        """True while the broker is known unreachable, and until the relay finds the spool empty after it."""
        relay = self.relay
        if relay is None:
            return False
        if self._outage_mark is not None and relay._metrics.relayed > self._outage_mark:
            self._outage_mark = None
        return self._outage_mark is not None or relay.has_work

    def _mark_outage(self) -> None:
        if self.relay is not None and self._outage_mark is None:
            self._outage_mark = self.relay._metrics.relayed

    async def keep(self, message: Prepared) -> None:
        if self.relay is not None:
            self.relay.has_work = True
        await self.outbox.add_prepared([message])

    async def publish(self, message: Prepared, options: Options, deadline: float | None, span: NoRecord) -> bool:
        """Publish `message` through the engine or spool it; True when it was spooled.

        Raises what publish() raises otherwise.
        """
        self.start()
        engine = self.engine()
        if self.has_backlog:
            await self.keep(message)
            return True
        run_deadline = deadline
        if deadline is not None and options.timeout is not None:
            run_deadline = deadline - min(_SPOOL_MARGIN, options.timeout * _SPOOL_SHARE)
        attempts = asyncio.ensure_future(engine.publish(message, options, run_deadline, span))
        self._trying.add(attempts)
        try:
            await asyncio.wait([attempts])
        except asyncio.CancelledError:
            attempts.cancel()
            raise
        finally:
            self._trying.discard(attempts)
        if not attempts.cancelled():  # cancelled: another publish found the broker unreachable (see _spool_now)
            exc = attempts.exception()
            if exc is None:
                return False
            if not unreachable(exc, engine):
                raise exc
        await self.keep(message)
        self._mark_outage()
        self._spool_now(engine)
        return True

    def _spool_now(self, engine: Engine) -> None:
        """The broker is unreachable: publishes still trying it go to the spool now, not at their timeout."""
        if engine.link.ready_channel() is None:
            for run in self._trying:
                run.cancel()
