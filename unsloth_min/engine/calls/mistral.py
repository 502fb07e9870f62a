"""Mistral (before v11): `[TOOL_CALLS][{"name": "f", "arguments": {…}}, …]`, one list of calls.

Strategy: the marker, then a JSON list of call objects (`JsonList`); the model's own ids (`"id"`,
after the arguments) are kept, so calls are read whole. Ids are 9 letters and digits, as its
templates require (`fit_id`: a conversation's other ids mapped to such, `mint_id`: ours). The
forced grammar is the marker and the list (of one call without parallel calls); the lazy trigger
the marker, `[` and the start of a call.

Does not: read v11's `[TOOL_CALLS]NAME[ARGS]{…}` (mistral_args.py).
"""
from __future__ import annotations

import hashlib
import re
import secrets
import string

from .jsoncalls import JsonList, Keys

ID_CHARS = string.ascii_letters + string.digits
ID_RULE = re.compile(r"[A-Za-z0-9]{9}")  # the templates' own check: "alphanumeric, length 9"


def fit_id(call_id: str) -> str:
    """An id as Mistral's templates accept it: kept if it is one, else the same 9 characters
    for the same id (its call and its result must still match)."""
    if ID_RULE.fullmatch(call_id):
        return call_id
    n = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    return "".join(ID_CHARS[(n // len(ID_CHARS) ** i) % len(ID_CHARS)] for i in range(9))


def mint_id() -> str:
    return "".join(secrets.choice(ID_CHARS) for _ in range(9))


class Mistral(JsonList):
    name, open = "mistral", "[TOOL_CALLS]"
    signature = ("[TOOL_CALLS]",)
    keys = Keys(id="id")  # the model's own ids come after the arguments: calls are read whole

    def fit_id(self, call_id: str, index: int, name: str) -> str:
        return fit_id(call_id)

    def mint_id(self, name: str, index: int) -> str:
        return mint_id()


MISTRAL = Mistral()
