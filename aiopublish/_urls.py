"""Broker URLs: the nodes of `amqp_uri`, kombu's schemes, and passwords kept out of every text.

A URL is checked before anything connects, with errors that never quote its password;
`mask_url` and `mask_text` replace passwords with `******` in logs, reprs and errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from yarl import URL

__all__ = ["mask_text", "mask_url", "node_urls"]

_MASK = "******"


def mask_url(url: str | URL) -> str:
    """The URL with its password, and nothing else, replaced by `******`, for logs, reprs and errors.

    The user name stays (even when it equals the password). A text yarl cannot parse as a URL is
    masked as free text (`mask_text`).
    """
    try:
        parsed = URL(str(url))
    except ValueError:
        return mask_text(str(url))
    if not parsed.password:
        return str(url)  # as given: yarl would write "memory://" as "memory:"
    return str(parsed.with_password(_MASK))


def node_urls(amqp_uri: object) -> tuple[str, ...]:
    if isinstance(amqp_uri, str):
        urls = tuple(part.strip() for part in amqp_uri.split(",") if part.strip())
    elif isinstance(amqp_uri, Sequence) and all(isinstance(u, str) for u in amqp_uri):
        urls = tuple(amqp_uri)
    else:
        # Not the value itself: a list of URLs would show their passwords.
        kinds = sorted({type(u).__name__ for u in amqp_uri}) if isinstance(amqp_uri, Sequence) else []
        held = f" holding {', '.join(kinds)}" if kinds else ""
        raise TypeError(
            "amqp_uri must be a URL, a comma-separated str of URLs or a list of them, "
            f"not a {type(amqp_uri).__name__}{held}"
        )
    if not urls:
        raise ValueError("amqp_uri is empty: give at least one amqp:// URL")
    return tuple(_node_url(url) for url in urls)


# kombu's names for an AMQP broker (nameko's usual AMQP_URI is "pyamqp://guest:guest@localhost"):
# the same connection as amqp://, with the defaults kombu applies (see _node_url).
_KOMBU_SCHEMES = ("pyamqp", "librabbitmq")
_SCHEMES = ("amqp", "amqps", "amqp1", "amqp1s", "memory", *_KOMBU_SCHEMES)
_QUOTE_HINT = "percent-quote them, e.g. urllib.parse.quote(password, safe='')"


def _node_url(url: str) -> str:
    """One node's URL as aiopublish connects to it; ValueError that never shows its password.

    A password holding an unquoted '/', '#', '?' or '@' makes the URL mean something else
    (yarl then reads part of the password as the port, or as the host and vhost): refused,
    with the URL shown up to its last '@' masked. The error is raised outside any `except`
    block, so not even its __context__ holds the parser's message.
    """
    problem = _url_problem(url)
    if problem is not None:
        raise ValueError(f"amqp_uri {_redacted(url)!r} {problem}")
    scheme, _, rest = url.partition("://")
    if scheme.lower() in _KOMBU_SCHEMES:
        # kombu: pyamqp://host is amqp://guest:guest@host:5672/ (TLS through ssl=, on 5671), and
        # pyamqp:// alone is localhost. aiormq already defaults the login to guest:guest, the port
        # by scheme and an empty vhost to "/"; the rest of the URL is kept exactly as written.
        authority_end = _authority_end(rest)
        login, at, host = rest[:authority_end].rpartition("@")
        if not host or host.startswith(":"):
            host = "localhost" + host
        return f"amqp://{login}{at}{host}{rest[authority_end:]}"
    return url


def _authority_end(rest: str) -> int:
    """Where the user:password@host:port part of a URL (without its scheme://) ends."""
    return min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))


def _url_problem(url: str) -> str | None:
    """What is wrong with `url`, in words that do not quote it, or None."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in _SCHEMES:
        return "must start with amqp:// or amqps:// (or kombu's pyamqp:// or librabbitmq://, or amqp1:// for AMQP 1.0)"
    if "@" in rest[_authority_end(rest) :]:
        return f"has an '@' after a '/', '?' or '#' (if the password or vhost holds these: {_QUOTE_HINT})"
    try:
        parsed = URL(url)
        # yarl parses lazily: touch every part now so that no later access raises.
        _ = (parsed.host, parsed.port, parsed.user, parsed.password, parsed.path, parsed.query)
    except Exception:  # whatever the parser raises, its text may hold the password
        return f"cannot be parsed as a URL (if a password or vhost holds '/', '#', '?', '@' or '%': {_QUOTE_HINT})"
    return None


def _redacted(url: str) -> str:
    """`url` with everything before its last '@' (where any password is) hidden.

    Without an '@', a non-numeric "port" is hidden too: "amqp://guest:S3cr3t" is a login
    whose "@host" was forgotten, not a host and a port.
    """
    head, at, tail = url.rpartition("@")
    if at:
        scheme, separator, _ = head.partition("://")
        return f"{scheme}://{_MASK}@{tail}" if separator else f"{_MASK}@{tail}"
    scheme, separator, rest = url.partition("://")
    end = _authority_end(rest)
    host, colon, port = rest[:end].rpartition(":")
    if colon and not port.isdigit() and not port.endswith("]"):
        return f"{scheme}{separator}{host}:{_MASK}{rest[end:]}"
    return url


# scheme://user:password@ in free text: the password is everything between the first ':' after
# the scheme and the '@' (userinfo holds no '/', '@' or whitespace unquoted).
_PASSWORD_IN_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]*@")


def mask_text(text: str) -> str:
    """Mask the password of every URL with userinfo (`scheme://user:password@`) in free text."""
    return _PASSWORD_IN_URL.sub(rf"\g<1>{_MASK}@", text)
