"""A private, throw-away RabbitMQ node for tests that kill, restart or block a broker.

The shared broker on 127.0.0.1:5672 must never be disturbed, so tests that need
to break a broker start their own node with Debian's ``rabbitmq-server``:

* own node name (``aiopub-<pid>-<random>@localhost``), own AMQP port and
  Erlang distribution port (both free ports picked at first start, reused on
  restart), listening on 127.0.0.1 only;
* own directory (``/tmp/aiopublish-rabbit-*``; stale ones whose test process
  and node are both dead are swept at the next start) holding the config file, an
  empty ``enabled_plugins`` file (``[].``), an empty ``rabbitmq-env.conf`` (so
  ``/etc/rabbitmq/rabbitmq-env.conf``, which names the shared node, is not
  read), the Mnesia/data dir, the logs, the pid file, and a private ``HOME``
  with its own ``.erlang.cookie``;
* run as the ``rabbitmq`` user when we are root (the directory is
  ``chown``-ed to it), as the server expects.

Cookie: Debian's ``/usr/sbin/rabbitmqctl`` wrapper ``su``-s to ``rabbitmq`` and
so uses ``/var/lib/rabbitmq/.erlang.cookie``; the unwrapped CLI run as root
would use ``/root/.erlang.cookie`` (and create a random one, which then does
not match). We avoid both: the node and :meth:`RabbitNode.ctl` share the
private ``HOME`` (and thus the private cookie), and ``ctl`` runs as the same
user as the node.

Safety: :meth:`RabbitNode.kill` only signals the pid from *our* node's pid
file after checking it belongs to the session of the server process we
spawned, so the shared node can never be hit. The server is started with
``setpriv --pdeathsig TERM`` (when available), so if the test process dies
abruptly (even SIGKILL) the node is shut down too; an ``atexit`` hook kills
nodes still running at interpreter exit. The death signal follows the *thread*
that called :meth:`RabbitNode.start`: call it from the event loop's thread
(pytest-asyncio runs loops in the main thread), not from a short-lived thread.

The node registers with the already running (shared) epmd; if no epmd runs,
Erlang starts one, which then outlives the node.

Which RabbitMQ: the machine's (Debian 12: 3.10) unless ``rabbitmq=`` names a chroot of
tests/rabbitmq_chroots.py (4.0, 4.3); by default the one ``private_node_chroot()`` picks
(``$AIOPUBLISH_TEST_RABBITMQ``, else the series of the broker under test). A chroot's node
keeps its directory under the chroot's ``/tmp`` and is started as
``chroot ROOT setpriv --pdeathsig TERM --reuid rabbitmq ... rabbitmq-server``: every path
handed to it is the one it sees inside (:meth:`RabbitNode._inside`), and the death signal is
set by the chroot's setpriv after the user change, which would clear it.

Optional extras (all off by default, so ``RabbitNode()`` is the plain node above):

* ``tls=TlsFiles(...)``: a second AMQP listener with TLS on 127.0.0.1 (``tls_port``,
  picked with the other ports), using copies of the CA, certificate and key put
  in the node's directory (so the ``rabbitmq`` user can read them); client
  certificates are verified when sent (``verify_peer``) and required only with
  ``require_client_cert=True``. :meth:`RabbitNode.tls_url` gives its ``amqps://`` URL;
* ``plugins=[...]``: written to the node's ``enabled_plugins`` file;
* ``config=[...]``: extra ``rabbitmq.conf`` lines (e.g. ``auth_mechanisms.1 = PLAIN``);
* ``cookie="..."``: the Erlang cookie (nodes that form a cluster need the same one);
  :meth:`RabbitNode.join_cluster` then makes this node join another's cluster.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiormq

from tests.rabbitmq_chroots import VERSIONS, Chroot, private_node_chroot

if TYPE_CHECKING:
    from tests.faults.tls import TlsFiles

__all__ = ["RabbitCtlError", "RabbitNode", "epmd_names"]

_SBIN_CANDIDATES = ("/usr/lib/rabbitmq/bin", "/usr/lib/rabbitmq/sbin", "/usr/sbin")
_RABBIT_USER = "rabbitmq"
# Ports a private node must never take: the shared node's AMQP, dist and CLI ports, epmd, the chroots' standing nodes.
_RESERVED_PORTS = frozenset(
    {4369, 5672, 25672, *range(35672, 35683)}
    | {port for chroot in map(Chroot, VERSIONS) for port in (chroot.port, chroot.dist_port, chroot.epmd_port)}
)
_DIR_PREFIX = "aiopublish-rabbit-"
# Strong references: a forgotten node is still killed at exit (atexit hook below).
_LIVE_NODES: set[RabbitNode] = set()
_MACHINE = "machine"  # RabbitNode(rabbitmq=...): not a chroot, whatever the environment says


class RabbitCtlError(RuntimeError):
    """``rabbitmqctl`` exited with a non-zero status."""


def _find_tool(name: str) -> str:
    """Prefer the unwrapped script: Debian's /usr/sbin wrapper ``su``-s and redirects output."""
    for folder in _SBIN_CANDIDATES:
        path = Path(folder) / name
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (is rabbitmq-server installed?)")
    return found


def _free_port(exclude: set[int]) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _RESERVED_PORTS and port not in exclude:
            return port
    raise RuntimeError("no free port found")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _sweep_stale_dirs(parent: Path) -> None:
    """Remove node dirs left by test processes that died without cleaning up.

    Only when both the owning test process and the node's beam are gone: a
    live node is never touched here (``--pdeathsig`` stops it when its owner dies).
    """
    for folder in parent.glob(f"{_DIR_PREFIX}*"):
        try:
            owner = int((folder / "owner.pid").read_text())
            beam_file = folder / "rabbit.pid"
            beam = int(beam_file.read_text()) if beam_file.exists() else None
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner) and (beam is None or not _pid_alive(beam)):
            shutil.rmtree(folder, ignore_errors=True)


async def epmd_names(host: str = "127.0.0.1", port: int | None = None) -> dict[str, int]:
    """Node names (without ``@host``) registered in epmd, with their distribution ports."""
    port = port or int(os.environ.get("ERL_EPMD_PORT", "4369"))
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"\x00\x01n")  # NAMES_REQ
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    names: dict[str, int] = {}
    for line in data[4:].decode().splitlines():  # skip the 4-byte epmd port
        parts = line.split()  # "name <name> at port <port>"
        if len(parts) == 5 and parts[0] == "name":
            names[parts[1]] = int(parts[4])
    return names


class RabbitNode:
    """A private RabbitMQ node. Loop-agnostic: any event loop may drive any method."""

    def __init__(
        self,
        name: str | None = None,
        *,
        host: str = "localhost",
        tls: TlsFiles | None = None,
        require_client_cert: bool = False,
        plugins: Sequence[str] = (),
        config: Sequence[str] = (),
        cookie: str | None = None,
        rabbitmq: Chroot | str | None = None,
    ) -> None:
        self.name = name or f"aiopub-{os.getpid()}-{secrets.token_hex(3)}"
        self.host = host
        self.nodename = f"{self.name}@{host}"
        self.port = 0
        self.dist_port = 0
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.tls_port = 0
        self.plugins = tuple(plugins)
        self.config = tuple(config)
        self.cookie = cookie
        self.base_dir: Path | None = None
        self.beam_pid: int | None = None
        self.last_start_seconds: float | None = None
        # Set by set_memory_alarm(); a (re)started node always boots without the alarm.
        self.memory_alarm_set = False
        self._proc: subprocess.Popen[bytes] | None = None
        # None: the default choice; "machine": the machine's RabbitMQ; else a chroot's.
        self.chroot = private_node_chroot() if rabbitmq is None else None if rabbitmq == _MACHINE else rabbitmq
        assert not isinstance(self.chroot, str), f"rabbitmq= takes a Chroot or {_MACHINE!r}, not {self.chroot!r}"
        self._as_rabbit = os.geteuid() == 0
        if self.chroot is None:
            self._server = _find_tool("rabbitmq-server")
            self._ctl = _find_tool("rabbitmqctl")
        elif not self._as_rabbit:
            raise RuntimeError(f"a node of RabbitMQ {self.chroot.version} runs in a chroot: that needs root")

    @property
    def rabbitmq(self) -> str:
        """Which RabbitMQ this node runs: ``machine`` or a chroot's series (e.g. ``4.3``)."""
        return _MACHINE if self.chroot is None else self.chroot.version

    # -- addresses -------------------------------------------------------------

    def url(self, vhost: str = "/", user: str = "guest", password: str = "guest") -> str:
        if not self.port:
            raise RuntimeError("node never started: no port yet")
        path = "" if vhost == "/" else quote(vhost, safe="")
        return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/{path}"

    def tls_url(
        self, vhost: str = "/", user: str = "guest", password: str | None = "guest", host: str = "localhost"
    ) -> str:
        """The ``amqps://`` URL of the TLS listener; ``password=None`` leaves it out (EXTERNAL login)."""
        if not self.tls_port:
            raise RuntimeError("node has no TLS listener (tls=None) or never started")
        path = "" if vhost == "/" else quote(vhost, safe="")
        login = quote(user, safe="") if password is None else f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"amqps://{login}@{host}:{self.tls_port}/{path}"

    @property
    def running(self) -> bool:
        """The server process we spawned is alive (it may still be booting)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_file(self) -> Path | None:
        return None if self.base_dir is None else self.base_dir / "log" / f"{self.nodename}.log"

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, timeout: float = 60) -> None:  # noqa: ASYNC109 (documented API)
        """Start the node; return once an AMQP login as guest succeeds."""
        if self.running:
            raise RuntimeError(f"{self.nodename} is already running")
        if self.base_dir is None:
            self._prepare()
        await self._wait_unregistered(10)
        started = time.monotonic()
        self._spawn()
        _LIVE_NODES.add(self)
        try:
            await self._wait_amqp(started + timeout)
            self.beam_pid = self._read_beam_pid()
        except BaseException:
            await self._force_down()
            raise
        self.last_start_seconds = time.monotonic() - started
        self.memory_alarm_set = False

    async def stop(self, timeout: float = 30) -> None:  # noqa: ASYNC109 (documented API)
        """Graceful ``rabbitmqctl stop``; kills the node if it does not stop in time."""
        if not self.running:
            return
        try:
            await self.ctl("stop", timeout=timeout)
            await self._wait_exit(timeout)
        except (RabbitCtlError, TimeoutError, subprocess.TimeoutExpired):
            await self._force_down()
        await self._after_exit()

    async def flush_metadata(self) -> None:
        """Write out the definitions (queues, exchanges) declared so far, as a broker does in time.

        RabbitMQ 3.10 keeps them in Mnesia, whose transaction log it writes out lazily: a durable
        queue declared just before a kill -9 can come back missing after the restart (seen in CI:
        the queue gone, so every message in it "lost"). Kill tests are about messages, so they call
        this after declaring and before killing; the messages are still killed unflushed.
        """
        # rabbitmqctl starts an Erlang VM of its own: at load 14 on two cores it took over 30 s.
        await self.ctl("eval", "mnesia:dump_log().", timeout=120)

    async def kill(self) -> None:
        """SIGKILL this node's beam process (never anything else) and wait until it is gone."""
        if not self.running:
            return
        pid = self.beam_pid or self._read_beam_pid()
        with contextlib.suppress(ProcessLookupError):  # already dead: fine
            os.kill(pid, signal.SIGKILL)
        await self._wait_exit(30)
        await self._after_exit()

    async def restart(self, timeout: float = 60) -> None:  # noqa: ASYNC109 (documented API)
        """Start again on the same ports and data dir (durable queues and persistent messages survive)."""
        if self.running:
            await self.stop()
        await self.start(timeout=timeout)

    async def cleanup(self) -> None:
        """Stop (or kill) the node if it runs and remove its directory. Idempotent."""
        try:
            if self.running:
                with contextlib.suppress(Exception):
                    await self.stop(timeout=15)
            await self._force_down()
        finally:
            self._remove_dir()
            _LIVE_NODES.discard(self)

    # -- control --------------------------------------------------------------------

    async def ctl(self, *args: str, timeout: float = 60) -> str:  # noqa: ASYNC109 (documented API)
        """Run ``rabbitmqctl -n NODE *args`` (as the node's user, with its cookie); return stdout."""
        if self.base_dir is None:
            raise RuntimeError("node has no directory (never started or cleaned up)")
        if self.chroot is None:
            cmd = [self._ctl, "-n", self.nodename, *args]
        else:
            cmd = [*self.chroot.command("rabbitmqctl", env=self._env()), "-n", self.nodename, *args]
        result = await asyncio.to_thread(self._run_ctl, cmd, timeout)
        out = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            err = result.stderr.decode(errors="replace")
            raise RabbitCtlError(f"{' '.join(cmd)} exited {result.returncode}:\n{out}{err}")
        return out

    def _run_ctl(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            cmd,
            env=self._env(),
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            **self._user_kwargs(with_setpriv=False),  # type: ignore[arg-type]
        )

    async def memory_alarm(self) -> bool:
        """Whether this node's memory alarm is currently set."""
        out = await self.ctl("-q", "eval", "rabbit_alarm:get_alarms().")
        return "resource_limit,memory" in out.replace(" ", "")

    async def set_memory_alarm(self, on: bool) -> None:
        """Block (watermark 0) or unblock (watermark 0.4) publishers; returns once the alarm state matches."""
        await self.ctl("set_vm_memory_high_watermark", "0" if on else "0.4")
        self.memory_alarm_set = on
        deadline = time.monotonic() + 10
        while await self.memory_alarm() != on:
            if time.monotonic() > deadline:
                raise TimeoutError(f"memory alarm on {self.nodename} did not become {on}")
            await asyncio.sleep(0.1)

    async def add_user(self, user: str, password: str | None, vhost: str = "/") -> None:
        """Create `user` with full permissions on `vhost`; ``password=None``: no password (certificate login only)."""
        await self.ctl("add_user", user, password or secrets.token_hex(16))
        if password is None:
            await self.ctl("clear_password", user)
        await self.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")

    # -- clustering -------------------------------------------------------------------

    async def join_cluster(self, other: RabbitNode, timeout: float = 60) -> None:  # noqa: ASYNC109 (documented API)
        """Make this (running) node join `other`'s cluster: ``stop_app``, ``join_cluster``, ``start_app``.

        Both nodes need the same ``cookie``. Returns once this node accepts AMQP again.
        """
        if self.cookie is None or self.cookie != other.cookie:
            raise ValueError(f"{self.nodename} and {other.nodename} need the same cookie to form a cluster")
        await self.ctl("stop_app", timeout=timeout)
        await self.ctl("join_cluster", other.nodename, timeout=timeout)
        await self.ctl("start_app", timeout=timeout)
        await self._wait_amqp(time.monotonic() + timeout)

    async def running_nodes(self) -> list[str]:
        """The cluster's nodes this node sees running (itself included)."""
        out = await self.ctl("-q", "cluster_status", "--formatter", "json")
        return sorted(json.loads(out)["running_nodes"])

    # -- internals ----------------------------------------------------------------------

    def _inside(self, path: Path) -> str:
        """`path` as the node sees it: inside its chroot, if it runs in one."""
        return str(path) if self.chroot is None else self.chroot.inner(path)

    def _prepare(self) -> None:
        parent = Path(tempfile.gettempdir()) if self.chroot is None else self.chroot.root / "tmp"
        _sweep_stale_dirs(parent)
        base = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX, dir=parent))
        self.base_dir = base
        base.chmod(0o755)
        for sub in ("mnesia", "log", "home"):
            (base / sub).mkdir()
        self.port = _free_port(set())
        self.dist_port = _free_port({self.port})
        if self.tls is not None:
            self.tls_port = _free_port({self.port, self.dist_port})
        (base / "owner.pid").write_text(f"{os.getpid()}\n")
        (base / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        (base / "rabbitmq-env.conf").write_text("")
        lines = [f"listeners.tcp.local = 127.0.0.1:{self.port}", "log.console = false", "log.file.level = info"]
        if self.tls is not None:
            lines += self._tls_config(base / "tls")
        lines += self.config
        (base / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        cookie = base / "home" / ".erlang.cookie"
        cookie.write_text(self.cookie or secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        if self._as_rabbit:
            # The chroot's rabbitmq user may have another uid than the machine's.
            uid, gid = self.chroot.rabbit_ids() if self.chroot else (_RABBIT_USER, _RABBIT_USER)
            for path in [base, *base.rglob("*")]:
                shutil.chown(path, uid, gid)

    def _tls_config(self, folder: Path) -> list[str]:
        """Copy the TLS files into the node's directory (readable by its user); the config lines using them."""
        assert self.tls is not None
        folder.mkdir()
        copies = {}
        for role, source in (("ca", self.tls.ca_cert), ("cert", self.tls.cert), ("key", self.tls.key)):
            target = folder / f"{role}.pem"
            shutil.copyfile(source, target)
            target.chmod(0o600 if role == "key" else 0o644)
            copies[role] = target
        return [
            f"listeners.ssl.local = 127.0.0.1:{self.tls_port}",
            f"ssl_options.cacertfile = {self._inside(copies['ca'])}",
            f"ssl_options.certfile = {self._inside(copies['cert'])}",
            f"ssl_options.keyfile = {self._inside(copies['key'])}",
            "ssl_options.verify = verify_peer",
            f"ssl_options.fail_if_no_peer_cert = {str(self.require_client_cert).lower()}",
        ]

    def _spawn(self) -> None:
        assert self.base_dir is not None
        with open(self.base_dir / "log" / "server.out", "ab") as output:
            self._proc = subprocess.Popen(
                self._server_cmd(),
                env=self._env(),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._user_kwargs(with_setpriv=True),  # type: ignore[arg-type]
            )

    def _env(self) -> dict[str, str]:
        assert self.base_dir is not None
        base = self.base_dir
        inside = self._inside
        env = {
            # Not os.environ: stray ERL_* / RABBITMQ_* variables must not leak in.
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            if self.chroot is None
            else "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": inside(base / "home"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": inside(base / "mnesia"),
            "RABBITMQ_LOG_BASE": inside(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": inside(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": inside(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": inside(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": inside(base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": inside(base / "rabbit.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        if "ERL_EPMD_PORT" in os.environ:
            env["ERL_EPMD_PORT"] = os.environ["ERL_EPMD_PORT"]
        return env

    def _server_cmd(self) -> list[str]:
        if self.chroot is not None:
            return self.chroot.command("rabbitmq-server", env=self._env(), pdeathsig=True)
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            return [self._server]
        # pdeathsig: if the test process dies, the server script gets SIGTERM and
        # stops the node (it forwards TERM to beam). Needs no preexec_fn.
        cmd = [setpriv, "--pdeathsig", "TERM"]
        if self._as_rabbit:
            cmd += ["--reuid", _RABBIT_USER, "--regid", _RABBIT_USER, "--init-groups"]
        return [*cmd, "--", self._server]

    def _user_kwargs(self, *, with_setpriv: bool) -> dict[str, object]:
        if self.chroot is not None:
            return {}  # the chroot's setpriv changes the user (see Chroot.command)
        if not self._as_rabbit or (with_setpriv and shutil.which("setpriv")):
            return {}
        return {"user": _RABBIT_USER, "group": _RABBIT_USER, "extra_groups": []}

    async def _wait_amqp(self, deadline: float) -> None:
        last_error: BaseException | None = None
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"{self.nodename} exited during start-up:\n{self._log_tail()}")
            try:
                # A bare TCP probe first: aiormq logs an error for every refused connect.
                if await self._port_open():
                    async with asyncio.timeout(5):
                        connection = await aiormq.connect(self.url())
                    await connection.close()
                    return
            except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.nodename} not accepting AMQP on {self.port}: {last_error!r}\n{self._log_tail()}"
                )
            await asyncio.sleep(0.2)

    async def _port_open(self) -> bool:
        try:
            async with asyncio.timeout(2):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def _read_beam_pid(self) -> int:
        assert self.base_dir is not None and self._proc is not None
        pid = int((self.base_dir / "rabbit.pid").read_text().strip())
        # The server script runs in the session we created; anything outside it
        # (e.g. the shared node) must never be signalled.
        if _session_of(pid) != self._proc.pid:
            raise RuntimeError(f"pid {pid} from the pid file is not part of {self.nodename}")
        return pid

    async def _wait_exit(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._proc is not None and self._proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.nodename} did not exit within {seconds}s")
            await asyncio.sleep(0.05)

    async def _force_down(self) -> None:
        """SIGKILL everything left in the node's session and reap the server process."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await self._wait_exit(30)
        await self._after_exit()

    async def _after_exit(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            # The script normally exits only once beam has; but if the script was
            # killed on its own, beam may live on in the script's session: kill it.
            beam = self.beam_pid
            if beam is not None and _pid_alive(beam) and _session_of(beam) == proc.pid:
                os.kill(beam, signal.SIGKILL)
                deadline = time.monotonic() + 30
                while True:
                    if not _pid_alive(beam) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
            self._proc = None
        self.beam_pid = None
        await self._wait_unregistered(10)

    async def _wait_unregistered(self, seconds: float) -> None:
        """epmd drops a name when its node's socket closes; a restart must not race it."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                names = await epmd_names()
            except OSError:
                return  # no epmd: nothing registered
            if self.name not in names:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still registered in epmd")
            await asyncio.sleep(0.05)

    def _log_tail(self, lines: int = 30) -> str:
        if self.base_dir is None:
            return ""
        chunks = []
        for path in (self.base_dir / "log" / "server.out", self.log_file):
            if path is not None and path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(chunks)

    def _remove_dir(self) -> None:
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def _kill_now(self) -> None:
        """Synchronous last resort (atexit)."""
        proc = self._proc
        if proc is not None:
            beam = self.beam_pid
            if beam is not None and _session_of(beam) == proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(beam, signal.SIGKILL)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            self._proc = None
        self._remove_dir()


@atexit.register
def _kill_leftover_nodes() -> None:
    for node in list(_LIVE_NODES):
        node._kill_now()
