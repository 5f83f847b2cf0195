"""Declarations over AMQP 1.0: RabbitMQ 4.x's management node (HTTP over AMQP 1.0).

A pair of links to ``/management`` (one sending requests, one receiving responses,
both named alike and marked ``paired``) carries requests that look like HTTP: the
method in ``subject``, the resource in ``to`` (``/exchanges/NAME``, ``/queues/NAME``,
``/bindings``), the body an amqp-value map; the response names the request's
message-id in its correlation-id and its HTTP status in ``subject``. Requests go one at a
time (a declaration waits for its answer before the next, as over 0-9-1).

Status to exception, as the same declaration over 0-9-1 would fail: 409 (inequivalent
arguments) -> PreconditionFailed, 404 -> NotFound, 403 -> AccessRefused, others a
ChannelError with the status and the broker's text.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any
from urllib.parse import quote

from .._blame import ChannelInterrupted
from .._declarations import Entity, Exchange, Queue
from .._exceptions import AccessRefused, ChannelError, NotFound, PreconditionFailed
from . import _performatives as p
from ._codec import NULL, DecodeError, decode, encode_described, encode_fields, encode_string, encode_value
from ._connection import Delivery, Session

__all__ = ["Management"]

_ADDRESS = "/management"


class Management:
    """Declares exchanges, queues and bindings through the management node of one session."""

    def __init__(self, session: Session, timeout: float) -> None:
        self.session = session
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[tuple[int, Any]]] = {}
        self._lock = asyncio.Lock()
        session.attach_pair(_ADDRESS, self._on_response)

    async def declare(self, step: Entity) -> None:
        """Declare one step (an Exchange, a Queue, or a (queue, Binding) pair); raise the broker's refusal."""
        if isinstance(step, Exchange):
            if step.name == "":
                return  # the default exchange always exists
            body = {
                "type": step.type,
                "durable": step.durable,
                "auto_delete": step.auto_delete,
                "internal": step.internal,
                "arguments": dict(step.arguments),
            }
            await self.request("PUT", "/exchanges/" + quote(step.name, safe=""), body)
        elif isinstance(step, Queue):
            if step.name == "":
                raise ValueError("a queue named by the broker ('') cannot be declared over AMQP 1.0: give it a name")
            body = {
                "durable": step.durable,
                "exclusive": step.exclusive,
                "auto_delete": step.auto_delete,
                "arguments": dict(step.arguments),
            }
            await self.request("PUT", "/queues/" + quote(step.name, safe=""), body)
        else:
            queue, binding = step
            if binding.exchange.name == "":
                return  # every queue is bound to the default exchange already
            body = {
                "source": binding.exchange.name,
                "destination_queue": queue,
                "binding_key": binding.routing_key,
                "arguments": dict(binding.arguments),
            }
            await self.request("POST", "/bindings", body)

    async def request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """Send one request and return the response body; raise for a status that is not 2xx."""
        async with self._lock:
            message_id = f"aiopublish-{next(self._ids)}"
            sections = encode_described(
                p.PROPERTIES,
                encode_fields(
                    [encode_string(message_id), NULL, encode_string(path), encode_string(method), encode_string("$me")]
                ),
            ) + encode_described(p.AMQP_VALUE, NULL if body is None else encode_value(body, f"{method} {path}"))
            future: asyncio.Future[tuple[int, Any]] = self.session.loop.create_future()
            self._waiting[message_id] = future
            try:
                self.session.grant_receiver(1)
                self.session.send(Delivery(0, sections, None, None, None, 0, True), _ADDRESS)
                closing = self.session.closing
                either: list[asyncio.Future[Any]] = [future, closing]
                async with asyncio.timeout(self.timeout):
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                raise ChannelInterrupted(
                    f"the broker's management node did not answer {method} {path} within {self.timeout} s"
                ) from None
            finally:
                self._waiting.pop(message_id, None)
            if not future.done():
                raise ChannelInterrupted(f"the connection closed during {method} {path} ({closing.result()})")
        status, answer = future.result()
        if 200 <= status < 300:
            return answer
        raise _refusal(status, answer, f"{method} {path}")

    def _on_response(self, payload: bytes) -> None:
        correlation_id: Any = None
        status = 0
        body: Any = None
        offset = 0
        try:
            while offset < len(payload):
                section, offset = decode(payload, offset)
                code = p.descriptor_code(section)
                if code == p.PROPERTIES:
                    correlation_id = p.field(section, 5)
                    status = int(str(p.field(section, 3, "0")))
                elif code == p.AMQP_VALUE:
                    body = section.value
        except (DecodeError, ValueError):
            return
        future = self._waiting.get(str(correlation_id))
        if future is not None and not future.done():
            future.set_result((status, body))


def _refusal(status: int, answer: Any, what: str) -> ChannelError:
    text = f"{what}: {answer}" if answer else what
    if status == 409:
        return PreconditionFailed(406, f"PRECONDITION_FAILED - {text}")
    if status == 404:
        return NotFound(404, f"NOT_FOUND - {text}")
    if status == 403:
        return AccessRefused(403, f"ACCESS_REFUSED - {text}")
    return ChannelError(None, f"the management node answered {status} to {text}")
