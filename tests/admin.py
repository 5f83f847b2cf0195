"""Administering the broker under test: vhosts, users, permissions, policies, listings, connections.

A test that creates a vhost or a user must do it on the broker it publishes to, which is not
always the machine's default node. :func:`admin_for` picks the way from the test URL:

* ``$AIOPUBLISH_TEST_ADMIN_URL`` set (``http://user:password@host:15672/``): the broker's
  management HTTP API, for a broker anywhere (:class:`HttpAdmin`);
* the URL names a standing node of tests/rabbitmq_chroots.py (loopback, port 5740 or 5743):
  that chroot's own ``rabbitmqctl -n NODE`` (:class:`CtlAdmin`);
* the URL names the machine's broker (loopback, port 5672) and ``rabbitmqctl`` is installed:
  the machine's ``rabbitmqctl``;
* anything else: :class:`AdminUnavailable`, whose message says what to set.

Every method is synchronous (a subprocess or an HTTP request): call it through
``asyncio.to_thread`` from a coroutine. A refusal raises :class:`AdminError` with the tool's
or the API's own words, never a bare ``CalledProcessError``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.rabbitmq_chroots import chroot_for_url

__all__ = ["Admin", "AdminError", "AdminUnavailable", "CtlAdmin", "HttpAdmin", "admin_for", "broker_admin"]

ADMIN_URL_VARIABLE = "AIOPUBLISH_TEST_ADMIN_URL"
# Listing columns (rabbitmqctl's names), the management API's name for each where it differs.
LISTINGS = {
    "exchanges": ("name", "type", "durable", "auto_delete", "internal", "arguments"),
    "queues": ("name", "durable", "auto_delete", "exclusive", "arguments", "policy"),
    "bindings": ("source_name", "destination_name", "routing_key", "arguments"),
}
_HTTP_NAMES = {"source_name": "source", "destination_name": "destination"}
_CONNECTION_NAME = re.compile(r'\{"connection_name","((?:[^"\\]|\\.)*)"\}')


class AdminError(RuntimeError):
    """The broker (or the tool) refused an administrative request; the message holds its words."""


class AdminUnavailable(AdminError):
    """No way to administer the broker under test is known; the message says what to set."""


class Admin(ABC):
    """One way to administer one broker. `where` says which, for messages."""

    where: str

    @abstractmethod
    def add_vhost(self, vhost: str) -> None: ...

    @abstractmethod
    def delete_vhost(self, vhost: str) -> None: ...

    @abstractmethod
    def add_user(self, user: str, password: str) -> None: ...

    @abstractmethod
    def delete_user(self, user: str) -> None: ...

    @abstractmethod
    def set_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None: ...

    @abstractmethod
    def set_policy(
        self, vhost: str, name: str, pattern: str, definition: dict[str, Any], apply_to: str = "queues"
    ) -> None: ...

    @abstractmethod
    def clear_policy(self, vhost: str, name: str) -> None: ...

    @abstractmethod
    def listing(self, kind: str, vhost: str = "/") -> list[dict[str, Any]]:
        """The broker's `kind` (exchanges, queues, bindings) on `vhost`: rows of LISTINGS[kind]
        columns, each row's ``arguments`` a dict."""

    @abstractmethod
    def connection_names(self) -> list[str]:
        """The client-given names (``connection_name``) of the broker's open connections."""

    @abstractmethod
    def close_connections(self, name: str, reason: str = "closed by a test") -> int:
        """Close every connection whose client-given name is `name`; return how many."""


class CtlAdmin(Admin):
    """``rabbitmqctl`` (the machine's, or a chroot's run through ``chroot``): `command` ends with it."""

    def __init__(self, command: list[str], where: str) -> None:
        self.command = command
        self.where = where

    def ctl(self, *args: str) -> str:
        try:
            result = subprocess.run(
                [*self.command, "-q", *args], capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AdminError(f"rabbitmqctl {' '.join(args)} on {self.where}: {exc}") from exc
        if result.returncode != 0:
            raise AdminError(
                f"rabbitmqctl {' '.join(args)} on {self.where} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def add_vhost(self, vhost: str) -> None:
        self.ctl("add_vhost", vhost)

    def delete_vhost(self, vhost: str) -> None:
        self.ctl("delete_vhost", vhost)

    def add_user(self, user: str, password: str) -> None:
        self.ctl("add_user", user, password)

    def delete_user(self, user: str) -> None:
        self.ctl("delete_user", user)

    def set_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        self.ctl("set_permissions", "-p", vhost, user, configure, write, read)

    def set_policy(
        self, vhost: str, name: str, pattern: str, definition: dict[str, Any], apply_to: str = "queues"
    ) -> None:
        self.ctl("set_policy", "-p", vhost, "--apply-to", apply_to, name, pattern, json.dumps(definition))

    def clear_policy(self, vhost: str, name: str) -> None:
        self.ctl("clear_policy", "-p", vhost, name)

    def listing(self, kind: str, vhost: str = "/") -> list[dict[str, Any]]:
        out = self.ctl("-p", vhost, "--formatter", "json", f"list_{kind}", *LISTINGS[kind])
        rows: list[dict[str, Any]] = json.loads(out)
        for row in rows:  # rabbitmqctl gives a table as [key, type, value] triples
            row["arguments"] = {key: value for key, _kind, value in row.get("arguments") or []}
        return rows

    def _connections(self) -> list[tuple[str, str]]:
        out = self.ctl("list_connections", "pid", "client_properties", "--no-table-headers")
        found = []
        for line in out.splitlines():
            pid, _, properties = line.partition("\t")
            match = _CONNECTION_NAME.search(properties)
            if match:
                found.append((pid, match.group(1)))
        return found

    def connection_names(self) -> list[str]:
        return [name for _pid, name in self._connections()]

    def close_connections(self, name: str, reason: str = "closed by a test") -> int:
        pids = [pid for pid, found in self._connections() if found == name]
        for pid in pids:
            self.ctl("close_connection", pid, reason)
        return len(pids)


class HttpAdmin(Admin):
    """The management plugin's HTTP API at `base_url` (``http://user:password@host:15672/``)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AdminUnavailable(
                f"{ADMIN_URL_VARIABLE} must be the management API's http(s)://user:password@host:port/ URL"
            )
        credentials = f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
        self._auth = "Basic " + base64.b64encode(credentials.encode()).decode()
        port = f":{parts.port}" if parts.port else ""
        self.api = f"{parts.scheme}://{parts.hostname}{port}{parts.path.rstrip('/')}/api"
        self.where = f"the management API at {parts.scheme}://{parts.hostname}{port}"

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method)
        request.add_header("Authorization", self._auth)
        request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            raise AdminError(f"{method} {path} on {self.where}: {exc.code} {text}") from exc
        except OSError as exc:
            raise AdminError(f"{method} {path} on {self.where}: {exc}") from exc
        return json.loads(text) if text else None

    @staticmethod
    def _q(name: str) -> str:
        return quote(name, safe="")

    def add_vhost(self, vhost: str) -> None:
        self.request("PUT", f"/vhosts/{self._q(vhost)}", {})

    def delete_vhost(self, vhost: str) -> None:
        self.request("DELETE", f"/vhosts/{self._q(vhost)}")

    def add_user(self, user: str, password: str) -> None:
        self.request("PUT", f"/users/{self._q(user)}", {"password": password, "tags": ""})

    def delete_user(self, user: str) -> None:
        self.request("DELETE", f"/users/{self._q(user)}")

    def set_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        body = {"configure": configure, "write": write, "read": read}
        self.request("PUT", f"/permissions/{self._q(vhost)}/{self._q(user)}", body)

    def set_policy(
        self, vhost: str, name: str, pattern: str, definition: dict[str, Any], apply_to: str = "queues"
    ) -> None:
        body = {"pattern": pattern, "definition": definition, "apply-to": apply_to}
        self.request("PUT", f"/policies/{self._q(vhost)}/{self._q(name)}", body)

    def clear_policy(self, vhost: str, name: str) -> None:
        self.request("DELETE", f"/policies/{self._q(vhost)}/{self._q(name)}")

    def listing(self, kind: str, vhost: str = "/") -> list[dict[str, Any]]:
        rows = self.request("GET", f"/{kind}/{self._q(vhost)}")
        columns = LISTINGS[kind]
        return [{column: row.get(_HTTP_NAMES.get(column, column)) for column in columns} for row in rows]

    def _connections(self) -> list[tuple[str, str]]:
        rows = self.request("GET", "/connections")
        return [
            (row["name"], row["client_properties"]["connection_name"])
            for row in rows
            if "connection_name" in (row.get("client_properties") or {})
        ]

    def connection_names(self) -> list[str]:
        return [name for _id, name in self._connections()]

    def close_connections(self, name: str, reason: str = "closed by a test") -> int:
        ids = [identity for identity, found in self._connections() if found == name]
        for identity in ids:
            self.request("DELETE", f"/connections/{self._q(identity)}", headers={"X-Reason": reason})
        return len(ids)


def admin_for(url: str) -> Admin:
    """How to administer the broker at `url` (see the module docstring); AdminUnavailable if unknown."""
    if admin_url := os.environ.get(ADMIN_URL_VARIABLE):
        return HttpAdmin(admin_url)
    chroot = chroot_for_url(url)
    if chroot is not None:
        return CtlAdmin(chroot.ctl_command(), f"RabbitMQ {chroot.version} ({chroot.nodename}, chroot {chroot.root})")
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 5672}"
    if parts.hostname in ("127.0.0.1", "localhost", "::1") and (parts.port or 5672) == 5672:
        ctl = shutil.which("rabbitmqctl") or shutil.which("rabbitmqctl", path="/usr/sbin:/usr/lib/rabbitmq/bin")
        if ctl is not None:
            return CtlAdmin([ctl], f"the machine's RabbitMQ ({where})")
    raise AdminUnavailable(
        f"this test administers the broker under test ({where}: vhosts, users, permissions), and no way to "
        f"do that is known: set {ADMIN_URL_VARIABLE}=http://USER:PASSWORD@HOST:15672/ to its management "
        "API (plugin rabbitmq_management, a user tagged administrator)"
    )


def broker_admin(url: str) -> Admin:
    """admin_for(url) for a test or fixture: a missing way fails the test with the sentence, never a skip."""
    try:
        return admin_for(url)
    except AdminUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
