"""Why RabbitMQ refused an AMQP 1.0 open: asked again over AMQP 0-9-1, which says.

RabbitMQ 4.x answers an AMQP 1.0 open it refuses (a vhost that does not exist, one the
user may not use, a connection limit) by closing the socket about three seconds later
without a close frame (rabbit_amqp_reader: an error before the connection runs is a
"silent close"). Nothing on the wire tells these apart from a network fault. The same
listener speaks 0-9-1, whose connection.open the broker refuses with its reason
("vhost 'x' not found", "access to vhost 'x' refused"). So the link opens one 0-9-1
connection to the same node with the same login, TLS and vhost, and raises what a
Publisher on amqp:// raises for that answer: VhostNotFound or AuthenticationError, never
retried. When 0-9-1 opens (the refusal was a passing one, such as a connection limit)
or cannot connect at all, the AMQP 1.0 error stands: a retriable ConnectionFailed.
"""

from __future__ import annotations

import contextlib

from yarl import URL

from .._connection import ConnectionParams
from .._exceptions import AuthenticationError, ConnectionFailed, VhostNotFound

__all__ = ["refusal_over_091"]


async def refusal_over_091(params: ConnectionParams, node: str, what: str) -> ConnectionFailed | None:
    """The error the broker gives over 0-9-1 for `node`'s login and vhost, None when it gives none.

    `what` says what happened over AMQP 1.0; the error returned says both.
    """
    url = URL(node)
    classic = str(url.with_scheme("amqps" if url.scheme == "amqp1s" else "amqp"))
    try:
        connection = await params.connect(classic)
    except VhostNotFound as exc:
        return VhostNotFound(f"{what}; asked over AMQP 0-9-1, the broker says: {exc}", vhost=exc.vhost)
    except AuthenticationError as exc:
        return AuthenticationError(f"{what}; asked over AMQP 0-9-1, the broker says: {exc}")
    except Exception:
        return None  # no answer over 0-9-1 either: nothing learnt
    with contextlib.suppress(Exception):  # it answered: closing it is a courtesy
        await connection.close()
    return None
