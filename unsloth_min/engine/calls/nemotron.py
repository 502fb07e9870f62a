"""NVIDIA Nemotron Nano v2: `<TOOLCALL>[{"name": "f", "arguments": {…}}, …]</TOOLCALL>`.

Strategy: a JSON list of call objects between the two markers (`JsonList`, jsoncalls.py), after
the `<think>…</think>` block the prompt opens or closes.

Does not: read Nemotron 3's Qwen3-Coder XML calls (qwen3_xml.py detects that template).
"""
from __future__ import annotations

from .jsoncalls import JsonList


class Nemotron(JsonList):
    name, open, close = "nemotron", "<TOOLCALL>", "</TOOLCALL>"
    signature = ("<TOOLCALL>[",)


NEMOTRON = Nemotron()
