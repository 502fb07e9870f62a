"""Field-value syntax (RFC 9110 §5.6): tokens, lists, media types, `host[:port]` — pure functions.

Strategy: one `TOKEN` pattern (RFC 9110 §5.6.2 tchar) is the root every grammar here is built
from; the parser compiles the same pattern on bytes for methods and field names, so there is one
definition of a token in the whole server. Each function answers None (or False) for a value that
does not parse, and never raises: what a malformed value costs is the caller's decision.

What it does not do: decide which values are acceptable (the guard's policy, ../guard.py),
percent-decode, IDNA-decode, or parse dates, ranges, quality values or comments.
"""
from __future__ import annotations

import re

TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 §5.6.2: 1*tchar
# RFC 9112 §3.2 / RFC 3986 §3.2.2: uri-host [":" port] — IP-literal or reg-name; no userinfo
HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")
_LIST_ITEM = re.compile(r"[^\t ,](?:[^,]*[^\t ,])?")  # a list element without its OWS (§5.6.1)
_TOKEN_LIST = re.compile(rf"{TOKEN}(?:[ \t]*,[ \t]*{TOKEN})*")  # no empty elements
_MEDIA_TYPE = re.compile(rf"({TOKEN})/({TOKEN})[ \t]*")  # RFC 9110 §8.3.1
_PARAM = re.compile(rf';[ \t]*({TOKEN})=({TOKEN}|"(?:[^"\\]|\\.)*")[ \t]*')  # §5.6.6


def list_items(value: str) -> list[str]:
    """The non-empty elements of a comma-separated list, without their whitespace."""
    return _LIST_ITEM.findall(value)


def is_token_list(value: str) -> bool:
    """Whether `value` is `token *( OWS "," OWS token )`, e.g. Access-Control-Request-Headers."""
    return _TOKEN_LIST.fullmatch(value) is not None


def parse_media_type(value: str) -> tuple[str, dict[str, str]] | None:
    """`type/subtype` lower-cased and its parameters (names lower-cased), or None."""
    match = _MEDIA_TYPE.match(value)
    if match is None:
        return None
    params, pos = {}, match.end()
    while pos < len(value):
        param = _PARAM.match(value, pos)
        if param is None:
            return None
        text = param[2]
        if text.startswith('"'):  # quoted-string: drop the quotes, undo the escapes
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        params[param[1].lower()] = text
        pos = param.end()
    return f"{match[1]}/{match[2]}".lower(), params


def host_name(authority: str) -> str:
    """The host of a `host[:port]` authority, lower-cased; IPv6 keeps its brackets."""
    authority = authority.lower()
    if authority.startswith("["):
        return authority[: authority.find("]") + 1] or authority
    return authority.partition(":")[0]
