"""AMQP 1.0 for RabbitMQ 4.x: a codec, a connection with one session, and the link a Publisher uses.

`amqp1://` and `amqp1s://` (TLS) URLs select it (see aiopublish._transports); the
engine drives it as it drives the 0-9-1 link.
"""

from ._link import Amqp1Channel, Amqp1Link, address_of, amqp1_link

__all__ = ["Amqp1Channel", "Amqp1Link", "address_of", "amqp1_link"]
