"""RabbitMQ 4.x beside the machine's 3.10: Debian's packages in chroots, for CI and the fault harness.

Debian 12's own RabbitMQ is 3.10; Debian's package registry also carries 4.0 (suite ``trixie``,
Erlang 27) and 4.3 (suite ``sid``, Erlang 29). ``debootstrap --variant=minbase
--include=rabbitmq-server SUITE DIR MIRROR`` builds a chroot holding one of them in about a
minute; its server then runs beside the machine's broker on loopback, with its own node name,
ports and epmd, and the machine's ``/etc/hosts`` copied in (else Erlang fails with
``epmd_error localhost nxdomain``).

Everything lives under one fixed directory (``/var/lib/aiopublish-rabbitmq``, or
``$AIOPUBLISH_RABBITMQ_CHROOTS``): ``4.0/`` and ``4.3/``, each a chroot with a standing node
that CI points ``AIOPUBLISH_TEST_URL`` at (ports below, fixed so that a test run finds the node
its URL names). Private nodes of the fault harness (tests/faults/rabbit_node.py) run the same
chroot's server under their own names and ports: see :class:`Chroot`.

Command line (stdlib only, so CI runs it with the machine's python3 before any venv exists)::

    python3 -m tests.rabbitmq_chroots setup 4.0 4.3   # build the chroots (quick when built)
    python3 -m tests.rabbitmq_chroots start 4.0 4.3   # setup, then start the standing nodes
    python3 -m tests.rabbitmq_chroots url 4.3         # the standing node's AMQP URL
    python3 -m tests.rabbitmq_chroots version URL     # the version a broker announces
    python3 -m tests.rabbitmq_chroots stop 4.0 4.3    # stop the standing nodes

A step that fails raises :class:`SetupError` naming the step (the CLI exits 1 with it): a
broker CI was asked to test is never skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["VERSIONS", "Chroot", "SetupError", "announced_version", "chroot_for_url", "private_node_chroot"]

ROOT = Path(os.environ.get("AIOPUBLISH_RABBITMQ_CHROOTS", "/var/lib/aiopublish-rabbitmq"))
# Release series -> Debian suite carrying it. Keep docs/rabbitmq-versions.md in step.
VERSIONS = {"4.0": "trixie", "4.3": "sid"}
_RABBIT_BIN = "/usr/lib/rabbitmq/bin"
_READY = ".aiopublish-ready"  # written last: a chroot without it is rebuilt


class SetupError(RuntimeError):
    """A step of building or starting a chroot's RabbitMQ failed; the message names the step."""


def _mirror() -> str:
    """The Debian mirror apt already uses here (deb822 ``URIs:`` or one-line ``deb URL suite``)."""
    if mirror := os.environ.get("AIOPUBLISH_DEBIAN_MIRROR"):
        return mirror
    sources = [*Path("/etc/apt/sources.list.d").glob("*"), Path("/etc/apt/sources.list")]
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s*)?)(\S+)", text, re.MULTILINE):
            # Only Debian's own archive: other sources (nodesource, a cloud SDK's) have no sid or trixie.
            if "security" not in match.group(1) and match.group(1).rstrip("/").endswith("/debian"):
                return match.group(1)
    return "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Chroot:
    """One chroot holding Debian's RabbITMQ of one release series, and its standing node."""

    version: str

    @property
    def suite(self) -> str:
        return VERSIONS[self.version]

    @property
    def root(self) -> Path:
        return ROOT / self.version

    # The standing node: ports fixed per series (AMQP 57xy, distribution 257xy, epmd 47xy).
    @property
    def port(self) -> int:
        return 5700 + self._digits

    @property
    def dist_port(self) -> int:
        return 25700 + self._digits

    @property
    def epmd_port(self) -> int:
        return 4700 + self._digits

    @property
    def nodename(self) -> str:
        return f"aiopublish{self._digits}@localhost"

    @property
    def _digits(self) -> int:
        major, minor = self.version.split(".")
        return int(major) * 10 + int(minor)

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def ready(self) -> bool:
        return (self.root / _READY).exists()

    # -- running things inside ---------------------------------------------------------------

    def inner(self, path: Path) -> str:
        """`path` (under the chroot) as processes inside the chroot see it."""
        return "/" + str(Path(path).resolve().relative_to(self.root.resolve()))

    def rabbit_ids(self) -> tuple[int, int]:
        """uid and gid of the chroot's ``rabbitmq`` user (the host's may differ or not exist)."""
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == "rabbitmq":
                return int(fields[2]), int(fields[3])
        raise SetupError(f"{self.root}: the chroot has no rabbitmq user (rabbitmq-server not installed?)")

    def command(self, tool: str, *args: str, env: dict[str, str], pdeathsig: bool = False) -> list[str]:
        """Run RabbitMQ's `tool` inside the chroot as its rabbitmq user, with exactly `env`.

        The chroot's own setpriv changes the user (so names resolve in the chroot's passwd) and,
        with `pdeathsig`, sets the death signal after that change, which would clear it.
        """
        setpriv = ["setpriv", "--reuid", "rabbitmq", "--regid", "rabbitmq", "--init-groups"]
        if pdeathsig:
            setpriv += ["--pdeathsig", "TERM"]
        environment = [f"{key}={value}" for key, value in env.items()]
        return ["chroot", str(self.root), "/usr/bin/env", "-i", *environment, *setpriv, "--", f"{_RABBIT_BIN}/{tool}"]

    def _node_env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/var/lib/rabbitmq",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def ctl_command(self, *args: str) -> list[str]:
        """``rabbitmqctl -n NODE *args`` for the standing node."""
        return [*self.command("rabbitmqctl", env=self._node_env()), "-n", self.nodename, *args]

    # -- setup and the standing node ---------------------------------------------------------

    def setup(self) -> None:
        """Build the chroot unless built: debootstrap, then the files a node needs. Idempotent."""
        if self.ready:
            _copy_hosts(self.root)  # the machine's names may have changed since
            self._mount_proc()
            return
        if os.geteuid() != 0:
            raise SetupError(f"setting up RabbitMQ {self.version}: debootstrap and chroot need root")
        if shutil.which("debootstrap") is None:
            _step(
                f"installing debootstrap (for RabbitMQ {self.version})",
                ["apt-get", "install", "-y", "-qq", "debootstrap"],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        if not (self.root / _RABBIT_BIN.lstrip("/") / "rabbitmq-server").exists():
            partial = self.root.with_name(self.version + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)
            mirror = _mirror()
            _step(
                f"debootstrap of Debian {self.suite} with rabbitmq-server (RabbitMQ {self.version}) from {mirror}",
                ["debootstrap", "--variant=minbase", "--include=rabbitmq-server", self.suite, str(partial), mirror],
                timeout=1800,
            )
            shutil.rmtree(self.root, ignore_errors=True)
            partial.rename(self.root)
        _copy_hosts(self.root)
        installed = self.package_version()
        if not installed.startswith(self.version + "."):
            raise SetupError(
                f"RabbitMQ {self.version} chroot: Debian {self.suite} installed {installed}, not {self.version}.x"
            )
        self._mount_proc()
        conf = self.root / "etc" / "rabbitmq"
        conf.mkdir(parents=True, exist_ok=True)
        # The standing node's configuration (private nodes bring their own file).
        (conf / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n")
        (self.root / _READY).write_text(installed + "\n")

    def _mount_proc(self) -> None:
        """RabbitMQ reads its memory use from /proc: without it the memory monitor (and alarm) is dead."""
        proc = self.root / "proc"
        if not os.path.ismount(proc):
            _step(f"mounting /proc in the RabbitMQ {self.version} chroot", ["mount", "-t", "proc", "proc", str(proc)])

    def package_version(self) -> str:
        """The Debian package version of the chroot's rabbitmq-server (e.g. ``4.3.6-1``)."""
        status = (self.root / "var" / "lib" / "dpkg" / "status").read_text()
        match = re.search(r"^Package: rabbitmq-server\n(?:.+\n)*?Version: (\S+)", status, re.MULTILINE)
        if match is None:
            raise SetupError(f"{self.root}: rabbitmq-server is not installed in the chroot")
        return match.group(1)

    def running(self) -> bool:
        """The standing node answers an AMQP handshake on its port."""
        try:
            announced_version(self.url(), timeout=3)
        except OSError:
            return False
        return True

    def start(self, timeout: float = 180) -> None:
        """Set up, then start the standing node unless it runs; return once it accepts logins."""
        self.setup()
        if self.running():
            return
        log_dir = self.root / "var" / "log" / "rabbitmq"
        log_dir.mkdir(parents=True, exist_ok=True)
        uid, gid = self.rabbit_ids()
        for path in (log_dir, self.root / "var" / "lib" / "rabbitmq"):
            os.chown(path, uid, gid)
        with open(log_dir / "aiopublish-start.out", "ab") as out:
            # A session of its own: the node outlives this script, for the next test run.
            server = subprocess.Popen(
                self.command("rabbitmq-server", env=self._node_env()),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        what = f"starting RabbitMQ {self.version} ({self.nodename} on 127.0.0.1:{self.port}; log in {log_dir})"
        deadline = time.monotonic() + timeout
        # The node registers (and await_startup can ask it) only some seconds in: wait for its port first.
        while not self.running():
            if server.poll() is not None:
                raise SetupError(f"{what}: the server exited with {server.returncode}")
            if time.monotonic() > deadline:
                raise SetupError(f"{what}: no AMQP answer within {timeout} s")
            time.sleep(0.5)
        # The port opens before the broker accepts logins; await_startup returns once it does.
        _step(what, self.ctl_command("await_startup", "--timeout", str(int(timeout))), timeout=timeout + 30)

    def stop(self) -> None:
        if self.ready and self.running():
            _step(f"stopping RabbitMQ {self.version}", self.ctl_command("stop"), timeout=120)


def _copy_hosts(root: Path) -> None:
    shutil.copyfile("/etc/hosts", root / "etc" / "hosts")


def _step(
    what: str, command: list[str], *, timeout: float = 600, env: dict[str, str] | None = None, hint: str = ""
) -> str:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"{what}: {exc}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise SetupError(f"{what} failed (exit {result.returncode}){'; ' + hint if hint else ''}:\n{tail}")
    return result.stdout


def announced_version(url: str, timeout: float = 10) -> str:
    """The ``version`` a broker announces in ``connection.start`` (AMQP 0-9-1), read with stdlib only."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=timeout) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        data = b""
        while len(data) < 7 or len(data) < 7 + struct.unpack(">I", data[3:7])[0] + 1:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"{parts.hostname}:{parts.port} closed the connection before connection.start")
            data += chunk
    # server-properties is a field table; its "version" entry is a long string ('S').
    marker = b"\x07versionS"
    at = data.find(marker)
    if at < 0:
        return "unknown"
    (length,) = struct.unpack(">I", data[at + len(marker) : at + len(marker) + 4])
    start = at + len(marker) + 4
    return data[start : start + length].decode()


def chroot_for_url(url: str) -> Chroot | None:
    """The chroot whose standing node `url` names (loopback and its port), else None."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    for version in VERSIONS:
        chroot = Chroot(version)
        if parts.port == chroot.port and chroot.ready:
            return chroot
    return None


def private_node_chroot() -> Chroot | None:
    """The RabbitMQ private test nodes run: ``$AIOPUBLISH_TEST_RABBITMQ`` (a series, or ``machine``),
    else the series of the broker under test when that is a standing chroot node, else the machine's.
    """
    chosen = os.environ.get("AIOPUBLISH_TEST_RABBITMQ", "")
    if chosen == "machine":
        return None
    if chosen:
        if chosen not in VERSIONS:
            raise SetupError(f"AIOPUBLISH_TEST_RABBITMQ={chosen}: known are machine, {', '.join(VERSIONS)}")
        chroot = Chroot(chosen)
        if not chroot.ready:
            raise SetupError(
                f"AIOPUBLISH_TEST_RABBITMQ={chosen}: no chroot at {chroot.root}; "
                f"run `python3 -m tests.rabbitmq_chroots setup {chosen}` first"
            )
        return chroot
    return chroot_for_url(os.environ.get("AIOPUBLISH_TEST_URL", ""))


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("setup", "start", "stop", "url", "version"):
        print(__doc__, file=sys.stderr)
        return 2
    command, targets = argv[0], argv[1:]
    try:
        if command == "version":
            for url in targets:
                print(announced_version(url))
            return 0
        unknown = [target for target in targets if target not in VERSIONS]
        if unknown:
            raise SetupError(f"unknown RabbitMQ series {', '.join(unknown)}: known are {', '.join(VERSIONS)}")
        for version in targets:
            chroot = Chroot(version)
            if command == "setup":
                chroot.setup()
            elif command == "start":
                chroot.start()
            elif command == "stop":
                chroot.stop()
            else:
                print(chroot.url())
    except SetupError as exc:
        print(f"rabbitmq_chroots {command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
