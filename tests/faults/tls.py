"""Throw-away certificates for TLS tests, made with the ``openssl`` command line tool.

No Python dependency: Debian's ``rabbitmq-server`` package depends on ``openssl``,
so wherever a private node can run, the tool is there.

:func:`make_test_pki` writes into one folder:

* a CA (``ca.pem``/``ca.key``, CN ``aiopublish test CA <random>``);
* a server certificate signed by it for ``localhost`` and ``127.0.0.1``
  (subjectAltName DNS and IP), with its key;
* a client certificate signed by it whose CN is a user name (for the EXTERNAL
  login method with ``ssl_cert_login_from = common_name``), with its key;
* a second, unrelated CA (``other-ca.pem``): trusting only it must make
  certificate verification fail (the wrong-CA case).

Keys are EC P-256 (instant to generate); certificates are valid for two days
from now and carry key identifiers, basic constraints and key usages, so strict
verifiers accept them too. Files are plain PEM: key files are
PKCS#8 without a passphrase.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertificateAuthority", "ClientCert", "TestPki", "TlsFiles", "make_test_pki"]

_KEY_ARGS = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
_DAYS = "2"

# A minimal openssl config: no dependency on the system's openssl.cnf defaults.
_REQ_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_LEAF_EXTENSIONS = """\
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
{san}
"""


def _openssl() -> str:
    tool = shutil.which("openssl")
    if tool is None:
        raise FileNotFoundError("the openssl command is needed for TLS tests (Debian: apt-get install openssl)")
    return tool


def _run(*args: str | Path, cwd: Path) -> None:
    result = subprocess.run(
        [_openssl(), *map(str, args)], cwd=cwd, capture_output=True, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(map(str, args))} failed ({result.returncode}):\n"
            + result.stderr.decode(errors="replace")
        )


@dataclass(frozen=True)
class TlsFiles:
    """What a TLS server needs: the CA it trusts for client certificates, its certificate and key."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and key; ``common_name`` is the user name EXTERNAL logs in as."""

    cert: Path
    key: Path
    common_name: str


class CertificateAuthority:
    """A self-signed CA in `folder` (files ``<stem>.pem`` and ``<stem>.key``) that issues leaf certificates."""

    def __init__(self, folder: Path, stem: str = "ca", *, name: str | None = None) -> None:
        self.folder = folder
        self.name = name or f"aiopublish test CA {secrets.token_hex(4)}"
        self.cert = folder / f"{stem}.pem"
        self.key = folder / f"{stem}.key"
        self._config = folder / "openssl-req.cnf"
        if not self._config.exists():
            self._config.write_text(_REQ_CONFIG)
        _run(
            "req", "-x509", "-new", *_KEY_ARGS, "-config", self._config,
            "-keyout", self.key, "-out", self.cert, "-days", _DAYS,
            "-subj", f"/O=aiopublish tests/CN={self.name}", "-extensions", "ca_ext",
            "-set_serial", f"0x{secrets.token_hex(8)}",
            cwd=folder,
        )  # fmt: skip
        self.key.chmod(0o600)

    def issue(
        self,
        stem: str,
        common_name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        client: bool = False,
    ) -> tuple[Path, Path]:
        """A leaf certificate signed by this CA: ``(<stem>.pem, <stem>.key)``; serverAuth unless `client`."""
        cert, key, csr = (self.folder / f"{stem}.{ext}" for ext in ("pem", "key", "csr"))
        names = [f"DNS:{name}" for name in dns] + [f"IP:{ip}" for ip in ips]
        extensions = self.folder / f"{stem}.ext.cnf"
        extensions.write_text(
            _LEAF_EXTENSIONS.format(
                usage="clientAuth" if client else "serverAuth",
                san=f"subjectAltName = {', '.join(names)}" if names else "",
            )
        )
        _run(
            "req", "-new", *_KEY_ARGS, "-config", self._config,
            "-keyout", key, "-out", csr, "-subj", f"/O=aiopublish tests/CN={common_name}",
            cwd=self.folder,
        )  # fmt: skip
        _run(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
            "-set_serial", f"0x{secrets.token_hex(8)}", "-days", _DAYS,
            "-extfile", extensions, "-extensions", "leaf", "-out", cert,
            cwd=self.folder,
        )  # fmt: skip
        csr.unlink()
        extensions.unlink()
        key.chmod(0o600)
        return cert, key


@dataclass(frozen=True)
class TestPki:
    """Everything a TLS test needs, in one folder."""

    __test__ = False  # not a pytest test class, despite the name

    folder: Path
    ca: CertificateAuthority
    server: TlsFiles
    client: ClientCert
    other_ca: CertificateAuthority

    @property
    def ca_cert(self) -> Path:
        return self.ca.cert

    @property
    def other_ca_cert(self) -> Path:
        return self.other_ca.cert

    def client_ssl(self, **extra: object) -> dict[str, object]:
        """The Publisher's ``ssl`` dict: trust our CA and present the client certificate."""
        return {
            "cafile": str(self.ca.cert),
            "certfile": str(self.client.cert),
            "keyfile": str(self.client.key),
            **extra,
        }


def make_test_pki(folder: Path, *, client_user: str = "aiopublish-cert-user") -> TestPki:
    """Create the CA, server and client certificates and the unrelated CA in `folder` (which must exist)."""
    ca = CertificateAuthority(folder, "ca")
    server_cert, server_key = ca.issue("server", "localhost", dns=("localhost",), ips=("127.0.0.1",))
    client_cert, client_key = ca.issue("client", client_user, client=True)
    other_ca = CertificateAuthority(folder, "other-ca", name=f"aiopublish unrelated CA {secrets.token_hex(4)}")
    return TestPki(
        folder=folder,
        ca=ca,
        server=TlsFiles(ca_cert=ca.cert, cert=server_cert, key=server_key),
        client=ClientCert(cert=client_cert, key=client_key, common_name=client_user),
        other_ca=other_ca,
    )
