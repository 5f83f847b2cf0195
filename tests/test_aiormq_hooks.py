"""aiormq's private names that aiopublish relies on still exist in the installed aiormq.

aiopublish subclasses aiormq's Connection and Channel and overrides or reads a few private,
some name-mangled, members (blocked state, content headers, confirm and return frames). A
release that renames one would not fail anything at import: blocked-state tracking or confirm
matching would just stop. These tests name the missing hook instead. pyproject.toml pins aiormq
to the minor series they pass on.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from importlib.metadata import version
from pathlib import Path

import aiormq
import aiormq.channel
import aiormq.connection
import pytest

from aiopublish._channel import ConfirmChannel
from aiopublish._connection import AmqpConnection

AIORMQ = version("aiormq")
PACKAGE = Path(__file__).resolve().parent.parent / "aiopublish"

# (aiormq class, private member, what aiopublish does with it)
HOOKS: list[tuple[type, str, str]] = [
    (aiormq.Connection, "_Connection__handle_connection_blocked", "overridden: connection.blocked frames"),
    (aiormq.Connection, "_Connection__handle_connection_unblocked", "overridden: connection.unblocked frames"),
    (aiormq.Connection, "_credentials_class", "overridden: the AMQPLAIN login method"),
    (aiormq.Channel, "_Channel__get_content_header", "called: reading a basic.return's header"),
    (aiormq.Channel, "_read_content", "called: reading a basic.return's body"),
    (aiormq.Channel, "_on_confirm_frame", "overridden: acks and nacks matched by aiopublish"),
    (aiormq.Channel, "_on_return_frame", "overridden: basic.return matched by aiopublish"),
    (aiormq.Channel, "_on_close_frame", "overridden: nothing is written after the broker's channel.close"),
    (aiormq.Connection, "_rpc", "overridden: a connection.close answering connection.open (a missing vhost)"),
    (
        aiormq.Connection,
        "_Connection__reader",
        "overridden: frames read through ConfirmFrames (confirms settled at once)",
    ),
]
# Set in aiormq's __init__, so only an instance has them: (class, attribute, expected type, why).
INSTANCE_HOOKS: list[tuple[type, str, type, str]] = [
    (aiormq.Connection, "_Connection__connection_unblocked", asyncio.Event, "set/cleared with the blocked state"),
    (aiormq.Channel, "_closing", asyncio.Future, "ConfirmChannel settles its publishes when it closes"),
    (aiormq.Connection, "_Connection__last_frame_time", float, "liveness: when the broker last sent anything"),
    (
        aiormq.Channel,
        "_Channel__reader_task",
        aiormq.abc.TaskWrapper,
        "get_producer() waits for a channel the broker closed to finish closing",
    ),
]
# Where aiormq must still call each overridden/called method by that name, or overriding it does nothing.
CALL_SITES = {
    "_Connection__handle_connection_blocked": (aiormq.connection, "self.__handle_connection_blocked("),
    "_Connection__handle_connection_unblocked": (aiormq.connection, "self.__handle_connection_unblocked("),
    "_credentials_class": (aiormq.connection, "self._credentials_class("),
    "_Channel__get_content_header": (aiormq.channel, "def __get_content_header("),
    "_read_content": (aiormq.channel, "def _read_content("),
    "_on_confirm_frame": (aiormq.channel, "self._on_confirm_frame("),
    "_on_return_frame": (aiormq.channel, "self._on_return_frame("),
    "_on_close_frame": (aiormq.channel, "self._on_close_frame("),
    "_rpc": (aiormq.connection, "self._rpc("),
    # ConfirmFrames replaces the FrameReceiver this loop iterates, and reads its StreamReader.
    "_Connection__reader": (aiormq.connection, "async for weight, channel, frame in frame_receiver:"),
}
KNOWN = {name for _, name, _ in HOOKS} | {name for _, name, _, _ in INSTANCE_HOOKS}


@pytest.mark.parametrize(("base", "name", "use"), HOOKS, ids=[name for _, name, _ in HOOKS])
def test_private_method_exists_and_is_called(base: type, name: str, use: str) -> None:
    """Each private aiormq method aiopublish overrides or calls exists and aiormq still dispatches to it."""
    assert callable(getattr(base, name, None)), (
        f"aiormq {AIORMQ} has no {base.__name__}.{name} ({use}): aiopublish's hook is gone; "
        "pin aiormq to the series tests/test_aiormq_hooks.py passes on, or port the hook"
    )
    module, needle = CALL_SITES[name]
    if needle not in inspect.getsource(module):
        pytest.fail(
            f"aiormq {AIORMQ} no longer has `{needle}` in {module.__name__}: the {name} hook ({use}) is never reached"
        )


def test_the_reader_loop_gets_a_frame_receiver_with_its_stream_reader() -> None:
    """aiormq starts its reader loop with the FrameReceiver whose StreamReader ConfirmFrames reads."""
    source = inspect.getsource(aiormq.connection)
    assert "self.__reader(frame_receiver)" in source
    assert "self.reader: asyncio.StreamReader = reader" in inspect.getsource(aiormq.connection.FrameReceiver)


async def test_private_instance_attributes_exist(amqp_url: str) -> None:
    """The attributes aiormq sets in __init__ that aiopublish reads exist on a real connection and channel."""
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        owners = {aiormq.Connection: connection, aiormq.Channel: channel}
        for base, name, kind, use in INSTANCE_HOOKS:
            value = getattr(owners[base], name, None)
            assert isinstance(value, kind), (
                f"aiormq {AIORMQ}: {base.__name__}.{name} is {type(value).__name__}, "
                f"not {kind.__name__} ({use}): aiopublish's hook is gone"
            )
        await channel.close()
    finally:
        await connection.close()


def _private_members_used(cls: type, base: type) -> set[str]:
    """Private names of `base` that `cls` overrides or reads on self without defining them itself."""
    overridden = {
        name
        for name in vars(cls)
        if name.startswith("_") and not name.startswith("__") and name != "_abc_impl" and hasattr(base, name)
    }
    tree = ast.parse(inspect.getsource(cls))
    assigned = {
        target.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute)
    }
    read = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in vars(cls)
        and node.attr not in assigned
    }
    return overridden | read


def test_every_private_aiormq_name_used_is_checked() -> None:
    """Every private aiormq name aiopublish's sources use is in this file's lists, so none goes unchecked."""
    mangled = set()
    for path in PACKAGE.glob("*.py"):
        mangled |= set(re.findall(r"\b_(?:Connection|Channel)__\w+", path.read_text()))
    used = mangled | _private_members_used(AmqpConnection, aiormq.Connection)
    used |= _private_members_used(ConfirmChannel, aiormq.Channel)
    assert "_Connection__handle_connection_blocked" in used  # the scan itself works
    assert used - KNOWN == set(), f"private aiormq names used but not checked here: {sorted(used - KNOWN)}"
