"""A FastAPI app that publishes to RabbitMQ from a route and from BackgroundTasks.

    pip install ".[fastapi]" uvicorn      # from a clone of aiopublish
    AIOPUBLISH_URL=amqp://guest:guest@localhost:5672/ uvicorn examples.fastapi_app:app

    curl -X POST localhost:8000/orders -H 'content-type: application/json' -d '{"order": 42, "status": "paid"}'

POST /orders           publishes, then answers 202 once the broker has confirmed the message
                       (503 if the broker refused it or could not be reached)
POST /orders/deferred  answers 202 at once and publishes afterwards, in a background task;
                       shutting the app down waits for such publishes before closing
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from aiopublish import AiopublishError, Publisher, Queue
from aiopublish.fastapi import PublisherDep, publisher_lifespan

log = logging.getLogger("examples.fastapi_app")

URL = os.environ.get("AIOPUBLISH_URL", "amqp://guest:guest@127.0.0.1:5672/")
QUEUE = os.environ.get("AIOPUBLISH_EXAMPLE_QUEUE", "aiopublish-example-orders")


class Order(BaseModel):
    order: int
    status: str = "new"


class Accepted(BaseModel):
    message_id: str
    status: str


async def publish_or_log(publisher: Publisher, payload: Any, message_id: str) -> None:
    """Publish from a background task: nobody awaits it, so a failure is logged rather than raised."""
    try:
        await publisher.publish(payload, message_id=message_id)
    except AiopublishError:
        log.exception("background publish of message %s failed", message_id)


def create_app(url: str = URL, queue: str = QUEUE) -> FastAPI:
    """The app, publishing to `queue` (declared at startup) on the broker at `url`."""
    app = FastAPI(
        title="aiopublish example",
        lifespan=publisher_lifespan(url, declare=[Queue(queue)], routing_key=queue),
    )

    @app.exception_handler(AiopublishError)
    async def broker_refused(request: Request, exc: AiopublishError) -> JSONResponse:
        # UndeliverableMessage, ConnectionFailed, PublishTimeout...: the order was not taken.
        return JSONResponse({"detail": f"not published: {exc}"}, status_code=503)

    @app.post("/orders", status_code=202)
    async def create_order(order: Order, publisher: PublisherDep) -> Accepted:
        message_id = str(uuid.uuid4())
        await publisher.publish(order.model_dump(), message_id=message_id)
        return Accepted(message_id=message_id, status="confirmed")

    @app.post("/orders/deferred", status_code=202)
    async def create_order_later(order: Order, publisher: PublisherDep, background: BackgroundTasks) -> Accepted:
        message_id = str(uuid.uuid4())
        background.add_task(publish_or_log, publisher, order.model_dump(), message_id)
        return Accepted(message_id=message_id, status="accepted")

    return app


app = create_app()
