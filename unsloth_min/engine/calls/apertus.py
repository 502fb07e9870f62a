"""Swiss AI Apertus: `<|tools_prefix|>[{"NAME": {…arguments…}}, …]<|tools_suffix|>`.

Strategy: a JSON list of one-key objects, the key naming the function and its value the arguments
(`JsonList` with `Keys(name=None)`, jsoncalls.py), read whole.

Does not: read Apertus's inner-thoughts markers (they stay text).
"""
from __future__ import annotations

from .jsoncalls import JsonList, Keys


class Apertus(JsonList):
    name, open, close = "apertus", "<|tools_prefix|>", "<|tools_suffix|>"
    keys = Keys(name=None)
    signature = ("<|tools_prefix|>",)


APERTUS = Apertus()
