"""The publish options as types, so a user's type checker catches `priorty=5` or `mandatory="yes"`.

`PublishOptions` is what `publish()` and `publish_many()` take as keywords;
`DefaultOptions` what the constructor takes as `**publish_kwargs` (every per-call
option except those it names itself). The values are checked again at run time
(aiopublish._options): these types are for the user's checker, not a replacement.
tests/test_types.py keeps them equal to the options the code accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

from ._declarations import Declarable, ExchangeLike
from .retry import RetryPolicy

__all__ = ["BatchOptions", "DefaultOptions", "DeliveryMode", "PublishOptions"]

#: 1 / "transient" or 2 / "persistent".
DeliveryMode = Literal[1, 2, "transient", "persistent"]


class _Destination(TypedDict, total=False):
    """The per-call options other than `headers` (publish_many's `headers` is one entry per message)."""

    exchange: ExchangeLike | None
    routing_key: str | None
    extra_headers: Mapping[str, Any] | None
    timeout: float | timedelta | None
    max_message_size: int
    retry_nacked: bool
    content_type: str | None
    content_encoding: str | None
    reply_to: str | None
    correlation_id: str | None
    message_id: str | None
    type: str | None
    app_id: str | None
    user_id: str | None
    timestamp: datetime | float | None
    cluster_id: str | None


class _Named(TypedDict, total=False):
    """The options the constructor names as parameters (nameko's order)."""

    use_confirms: bool
    serializer: str
    compression: str | None
    delivery_mode: DeliveryMode
    mandatory: bool
    priority: int
    expiration: float | timedelta | None
    declare: Sequence[Declarable]
    retry: bool
    retry_policy: RetryPolicy | Mapping[str, Any]


class DefaultOptions(_Destination, total=False):
    """Publish options the constructor takes as defaults for every publish (`**publish_kwargs`)."""

    headers: Mapping[str, Any] | None


class PublishOptions(DefaultOptions, _Named, total=False):
    """Every keyword of `publish()`: the defaults' keywords, the constructor's named options, and
    nameko's per-call `transport_options` (this call's connection-establishment retries)."""

    transport_options: Mapping[str, Any] | None


class BatchOptions(_Destination, _Named, total=False):
    """The keywords of `publish_many()` besides `routing_keys` and `headers` (one entry per message)."""
