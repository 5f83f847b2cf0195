"""The `ssl` argument: aiopublish's keys and py-amqp's/kombu's (nameko's AMQP_SSL) mapped to one SSLContext.

nameko users keep py-amqp's keys under `AMQP_SSL`: `ca_certs`, `cert_reqs`,
`certfile`, `keyfile`, `server_hostname`, `ssl_version`, `ciphers`. Each is
given the meaning py-amqp gives it (amqp/transport.py, `_wrap_socket_sni`),
with one deliberate difference: the broker's host name is checked unless
`check_hostname=False` (py-amqp checks it only when `server_hostname` is given;
an unchecked name lets anyone with a certificate from the same CA pose as the
broker). aiopublish's own keys (`cafile`, `capath`, `verify`) mean the same as
before and may be mixed with py-amqp's, but not two keys for one thing.

The context is built when the Publisher is built, so a missing or unreadable
CA/certificate/key file is a ValueError naming the option and the path at once,
never a connection error retried for seconds.
"""

from __future__ import annotations

import os
import ssl as ssl_module
from collections.abc import Mapping
from typing import Any

__all__ = ["SSL_KEYS", "build_context", "ssl_setting"]

# aiopublish's keys, then py-amqp's (kombu passes them on unchanged).
SSL_KEYS = (
    "cafile",
    "capath",
    "certfile",
    "keyfile",
    "verify",
    "server_hostname",
    "check_hostname",
    "ca_certs",
    "cert_reqs",
    "ssl_version",
    "ciphers",
    "tls_minimum_version",
    "tls_maximum_version",
)
# Two names for one thing: giving both is ambiguous.
_SAME = (("cafile", "ca_certs"),)
# py-amqp's legacy protocol constants: one TLS version each (the constants' own contexts are deprecated).
_PINNED_VERSIONS = {
    getattr(ssl_module, name): version
    for name, version in (
        ("PROTOCOL_TLSv1", ssl_module.TLSVersion.TLSv1),
        ("PROTOCOL_TLSv1_1", ssl_module.TLSVersion.TLSv1_1),
        ("PROTOCOL_TLSv1_2", ssl_module.TLSVersion.TLSv1_2),
    )
    if hasattr(ssl_module, name)
}
_ANY_VERSION = (ssl_module.PROTOCOL_TLS_CLIENT, ssl_module.PROTOCOL_TLS)
_CERT_REQS = {
    ssl_module.CERT_NONE: ssl_module.CERT_NONE,
    ssl_module.CERT_OPTIONAL: ssl_module.CERT_OPTIONAL,
    ssl_module.CERT_REQUIRED: ssl_module.CERT_REQUIRED,
}

SslSetting = bool | ssl_module.SSLContext | tuple[tuple[str, Any], ...] | None


def ssl_setting(ssl: object) -> SslSetting:
    """The `ssl` argument checked and made hashable (a dict becomes sorted pairs); TypeError/ValueError naming it."""
    if ssl is None or isinstance(ssl, (bool, ssl_module.SSLContext)):
        return ssl
    if isinstance(ssl, Mapping):
        unknown = sorted(str(key) for key in ssl if key not in SSL_KEYS)
        if unknown:
            raise ValueError(f"unknown ssl option(s): {', '.join(unknown)} (known: {', '.join(SSL_KEYS)})")
        for first, second in _SAME:
            if ssl.get(first) is not None and ssl.get(second) is not None:
                raise ValueError(f"ssl options {first!r} and {second!r} name the same thing: give one of them")
        return tuple(sorted(ssl.items()))
    raise TypeError(f"ssl must be True, an ssl.SSLContext or a dict, not {type(ssl).__name__}")


def _path(options: Mapping[str, Any], name: str, *, directory: bool = False) -> str | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"ssl option {name!r} must be a path, not {type(value).__name__}")
    path = os.fspath(value)
    exists = os.path.isdir(path) if directory else os.path.isfile(path)
    if not exists:
        kind = "directory" if directory else "file"
        raise ValueError(f"ssl option {name!r}: no such {kind}: {path!r}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"ssl option {name!r}: {path!r} is not readable by this process")
    return str(path)


def build_context(options: Mapping[str, Any]) -> ssl_module.SSLContext:
    """The client SSLContext the ssl options mean; ValueError naming the option (and path) that is wrong."""
    cafile = _path(options, "cafile") or _path(options, "ca_certs")
    capath = _path(options, "capath", directory=True)
    certfile = _path(options, "certfile")
    keyfile = _path(options, "keyfile")
    if keyfile is not None and certfile is None:
        raise ValueError("ssl option 'keyfile' needs 'certfile' (the client certificate it is the key of)")
    version = options.get("ssl_version")
    if version is not None and version not in _ANY_VERSION and version not in _PINNED_VERSIONS:
        raise ValueError(
            f"ssl option 'ssl_version' must be ssl.PROTOCOL_TLS_CLIENT, PROTOCOL_TLS or a PROTOCOL_TLSv1_x, "
            f"not {version!r}"
        )
    context = ssl_module.create_default_context()  # verifies the chain and the host name
    try:
        if cafile is not None or capath is not None:
            # Only these CAs are trusted, as with cafile= of create_default_context.
            context = ssl_module.create_default_context(cafile=cafile, capath=capath)
    except ssl_module.SSLError as exc:
        raise ValueError(f"ssl option {'cafile' if 'cafile' in options else 'ca_certs'!r}: {cafile!r}: {exc}") from None
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, keyfile)
        except ssl_module.SSLError as exc:
            raise ValueError(f"ssl options 'certfile'/'keyfile': {certfile!r}, {keyfile!r}: {exc}") from None
    if version in _PINNED_VERSIONS:
        context.minimum_version = context.maximum_version = _PINNED_VERSIONS[version]
    for name in ("tls_minimum_version", "tls_maximum_version"):
        value = options.get(name)
        if value is not None:
            if not isinstance(value, ssl_module.TLSVersion):
                raise TypeError(f"ssl option {name!r} must be an ssl.TLSVersion, not {value!r}")
            setattr(context, name.removeprefix("tls_"), value)
    ciphers = options.get("ciphers")
    if ciphers is not None:
        try:
            context.set_ciphers(ciphers)
        except (ssl_module.SSLError, TypeError) as exc:
            raise ValueError(f"ssl option 'ciphers': {ciphers!r}: {exc}") from None
    verify = _verify_mode(options)
    check_hostname = options.get("check_hostname", verify != ssl_module.CERT_NONE)
    if not isinstance(check_hostname, bool):
        raise TypeError(f"ssl option 'check_hostname' must be True or False, not {check_hostname!r}")
    if check_hostname and verify == ssl_module.CERT_NONE:
        raise ValueError("ssl option 'check_hostname' needs a verified certificate, but verification is off")
    # check_hostname before verify_mode: CERT_NONE is refused while check_hostname is on.
    context.check_hostname = check_hostname
    context.verify_mode = verify
    return context


def _verify_mode(options: Mapping[str, Any]) -> ssl_module.VerifyMode:
    verify = options.get("verify")
    if verify is not None and not isinstance(verify, bool):
        raise TypeError(f"ssl option 'verify' must be True or False, not {verify!r}")
    cert_reqs = options.get("cert_reqs")
    if cert_reqs is None:
        return ssl_module.CERT_NONE if verify is False else ssl_module.CERT_REQUIRED
    if isinstance(cert_reqs, bool) or cert_reqs not in _CERT_REQS:
        raise ValueError(
            f"ssl option 'cert_reqs' must be ssl.CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED, not {cert_reqs!r}"
        )
    mode = _CERT_REQS[cert_reqs]
    if verify is not None and verify != (mode != ssl_module.CERT_NONE):
        raise ValueError(f"ssl options 'verify'={verify!r} and 'cert_reqs'={mode.name} contradict each other")
    return mode
