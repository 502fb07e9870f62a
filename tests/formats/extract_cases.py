"""Read llama.cpp's chat parser cases (tests/test-chat.cpp) into our own fixture, cases.json.

Strategy: the cases are written in a small C++ builder language (`tst.test("raw output")
.tools({...}).enable_thinking(false).expect(message_assist_call).run();`). This walks the body
of `test_template_output_peg_parsers` with a tiny evaluator for the subset it uses — string
literals (escapes, raw strings, concatenation), the file's tool and message constants, its
message helper functions, brace lists, `for (x : {…})` loops and the LFM2 helper function — and
writes each case as plain JSON: template file, output text, request options, expected message.
A statement it cannot evaluate is skipped and counted (printed at the end), never guessed at.

Usage: python tests/formats/extract_cases.py LLAMA_CPP_DIR > tests/fixtures/formats/cases.json
(LLAMA_CPP_DIR: e.g. llama-cpp-python's sdist `vendor/llama.cpp`). The fixture is committed;
this script is only rerun to follow a newer llama.cpp.

Does not: run anything, or judge the cases (tests/formats/scorer.py does).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TOKEN = re.compile(r'''
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/|(?m:^\#[^\n]*))
  | (?P<raw>(?:u8)?R"(?P<delim>[^(\s]*)\((?P<rawbody>.*?)\)(?P=delim)")
  | (?P<str>(?:u8)?"(?:[^"\\\n]|\\.)*")
  | (?P<chr>'(?:[^'\\]|\\.)')
  | (?P<num>\d+(?:\.\d+)?[fFuUlL]*)
  | (?P<id>[A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)
  | (?P<op>::|->|==|!=|<=|>=|&&|\|\||[{}()\[\];,.=+\-*&<>!:?%/|^~])
''', re.S | re.X)

ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0", "a": "\a",
           "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def unescape(body: str) -> str:
    """A C++ string literal's body → its UTF-8 bytes, decoded (\\x escapes are bytes)."""
    out, i = bytearray(), 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        e = body[i + 1]
        if e == "x":
            m = re.match(r"[0-9a-fA-F]+", body[i + 2:])
            out.append(int(m.group(0), 16) & 0xFF)
            i += 2 + m.end()
        elif e in "uU":
            n = 4 if e == "u" else 8
            out += chr(int(body[i + 2:i + 2 + n], 16)).encode()
            i += 2 + n
        elif e.isdigit() and e != "0" or (e == "0" and body[i + 2:i + 3].isdigit()):
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(int(m.group(0), 8))
            i += 1 + m.end()
        else:
            out += ESCAPES[e].encode()
            i += 2
    return out.decode("utf-8")


def tokenize(src: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(src):
        m = TOKEN.match(src, pos)
        if m is None:
            raise SyntaxError(f"cannot read at {src[pos:pos + 40]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        if m.group("raw") is not None:
            out.append(("str", m.group("rawbody")))
        elif kind == "str":
            text = m.group(0)
            out.append(("str", unescape(text[text.index('"') + 1:-1])))
        else:
            out.append((kind if kind != "delim" else "op", m.group(0)))
    return out


class Unsupported(Exception):
    pass


def msg(role="assistant", content="", reasoning="", calls=(), tool_name="", call_id="") -> dict:
    return {"role": role, "content": content, "reasoning_content": reasoning,
            "tool_calls": [dict(c) for c in calls], "tool_name": tool_name, "tool_call_id": call_id}


def call(name, args="", cid="") -> dict:
    return {"name": name, "arguments": args or "", "id": cid or ""}


def simple_assist_msg(content, reasoning="", name="", args="", cid=""):
    return msg(content=content, reasoning=reasoning, calls=[call(name, args, cid)] if name or cid else [])


FUNCTIONS = {
    "simple_assist_msg": simple_assist_msg,
    "message_with_tool_calls": lambda n, a: simple_assist_msg("", "", n, a),
    "message_with_tool_calls_and_reasoning": lambda n, a, r: simple_assist_msg("", r, n, a),
    "message_with_reasoning_content_and_multiple_tool_calls":
        lambda r, c, calls: msg(content=c, reasoning=r, calls=[call(*x) for x in calls]),
    "message_with_content_and_tool_call": lambda c, n, a: simple_assist_msg(c, "", n, a),
    "message_with_reasoning_and_tool_call": lambda r, n, a: simple_assist_msg("", r, n, a),
    "std::string": lambda *a: a[0] if len(a) == 1 else a[1] * a[0],
}
CONSTANTS = {"true": True, "false": False, "nullptr": None, "detailed_debug": False}
GLOBAL_TYPES = ("common_chat_tool", "common_chat_msg")


class Walker:
    def __init__(self, toks):
        self.toks, self.env, self.funcs = toks, dict(CONSTANTS), {}
        self.testers: dict[str, str] = {}
        self.cases: list[dict] = []
        self.skipped: list[str] = []

    # ---- expressions ----------------------------------------------------------------------------
    def expr(self, i):
        """Evaluate from token i: (value, next index)."""
        v, i = self.term(i)
        while self.tok(i) == ("op", "+"):
            w, i = self.term(i + 1)
            v = v + w
        return v, i

    def tok(self, i):
        return self.toks[i] if i < len(self.toks) else ("eof", "")

    def term(self, i):
        kind, text = self.tok(i)
        if kind == "str":
            s = ""
            while self.tok(i)[0] == "str":
                s += self.tok(i)[1]
                i += 1
            return s, i
        if kind == "num":
            return (float(text.rstrip("fFuUlL")) if "." in text else int(text.rstrip("uUlL"))), i + 1
        if (kind, text) == ("op", "{"):
            return self.brace(i)
        if (kind, text) == ("op", "("):
            v, i = self.expr(i + 1)
            return v, self.expect(i, ")")
        if kind == "id":
            if self.tok(i + 1) == ("op", "(") and text in FUNCTIONS:
                args, i = self.args(i + 1)
                return FUNCTIONS[text](*args), i
            if text.startswith("COMMON_"):
                return text, i + 1
            if text in self.env:
                return self.env[text], i + 1
        raise Unsupported(f"{kind} {text!r}")

    def brace(self, i):
        return self.items(i, "{", "}")

    def args(self, i):
        return self.items(i, "(", ")")

    def items(self, i, opening, close):
        """A `{…}` or `(…)` list from token i (at its opening): (values, next index)."""
        items, i = [], self.expect(i, opening)
        while self.tok(i) != ("op", close):
            v, i = self.expr(i)
            items.append(v)
            if self.tok(i) == ("op", ","):
                i += 1
        return items, i + 1

    def expect(self, i, op):
        if self.tok(i) != ("op", op):
            raise Unsupported(f"expected {op!r} at {self.tok(i)}")
        return i + 1

    # ---- statements -----------------------------------------------------------------------------
    def end_of_statement(self, i):
        depth = 0
        while i < len(self.toks):
            k, t = self.toks[i]
            if k == "op" and t in "({[":
                depth += 1
            elif k == "op" and t in ")}]":
                depth -= 1
            elif (k, t) == ("op", ";") and depth == 0:
                return i + 1
            i += 1
        return i

    def block_end(self, i):
        """i at `{`: the index after its matching `}`."""
        depth = 0
        while True:
            k, t = self.toks[i]
            if (k, t) == ("op", "{"):
                depth += 1
            elif (k, t) == ("op", "}"):
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1

    def walk(self, i, end):
        while i < end:
            i = self.statement(i, end)

    def statement(self, i, end):
        k, t = self.tok(i)
        if (k, t) == ("op", "{"):
            j = self.block_end(i)
            self.walk(i + 1, j - 1)
            return j
        if (k, t) == ("op", "}") or (k, t) == ("op", ";"):
            return i + 1
        if (k, t) == ("id", "for"):
            return self.for_loop(i)
        if (k, t) in (("id", "if"), ("id", "while")):
            j = self.skip_parens(i + 1)
            return self.block_end(j) if self.tok(j) == ("op", "{") else self.end_of_statement(j)
        j = self.end_of_statement(i)
        try:
            self.simple(i, j)
        except (Unsupported, KeyError, TypeError, IndexError, ValueError) as e:
            self.skipped.append(f"{self.text(i, j)[:100]} … ({e})")
        return j

    def skip_parens(self, i):
        depth = 0
        while True:
            t = self.tok(i)
            if t == ("op", "("):
                depth += 1
            elif t == ("op", ")"):
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1

    def text(self, i, j):
        return " ".join(repr(t) if k == "str" else t for k, t in self.toks[i:j])

    def for_loop(self, i):
        close = self.skip_parens(i + 1)
        colon = max(n for n in range(i, close) if self.toks[n] == ("op", ":"))
        var = self.toks[colon - 1][1]
        body_end = self.block_end(close) if self.tok(close) == ("op", "{") else self.end_of_statement(close)
        try:
            values, _ = self.expr(colon + 1)
        except Unsupported:
            self.skipped.append("for " + self.text(i, close))
            return body_end
        for v in values:
            self.env[var] = v
            self.walk(close, body_end)
        return body_end

    def simple(self, i, j):
        toks = self.toks[i:j]
        kinds = [t for _, t in toks[:6]]
        if toks[0][0] == "id" and toks[1] == ("op", ".") and toks[2] == ("id", "test"):
            return self.case(i, toks[0][1])
        if toks[0][0] == "id" and toks[0][1] in self.funcs and toks[1] == ("op", "("):
            args, _ = self.args(i + 1)
            params, (b0, b1) = self.funcs[toks[0][1]]
            saved = dict(self.env)
            self.env.update(zip(params, args))
            self.walk(b0, b1)
            self.env = saved
            return
        if "peg_tester" in kinds:
            at = i + kinds.index("peg_tester")
            args, _ = self.args(at + 1)
            self.testers[toks[1][1] if toks[0][1] == "auto" else toks[0][1]] = args[0]
            return
        self.declaration(i, j)

    def declaration(self, i, j):
        toks = self.toks[i:j]
        # `NAME.field = expr;`
        if toks[0][0] == "id" and toks[1] == ("op", ".") and toks[3] == ("op", "=") and toks[0][1] in self.env:
            field = {"content": "content", "reasoning_content": "reasoning_content", "role": "role",
                     "tool_call_id": "tool_call_id", "tool_name": "tool_name"}[toks[2][1]]
            self.env[toks[0][1]][field], _ = self.expr(i + 4)
            return
        n = 0
        while toks[n][0] == "id" and toks[n][1] in ("static", "const", "auto"):
            n += 1
        typ = toks[n][1]
        if toks[n + 1] != ("op", "="):  # (`auto NAME = …`: no type)
            n += 1
        while toks[n][0] == "op" and toks[n][1] in "*&<>":
            n += 1 if toks[n][1] != "<" else next(k for k in range(n, len(toks)) if toks[k][1] == ">") - n + 1
        name = toks[n][1]
        after = toks[n + 1]
        if after == ("op", ";"):
            self.env[name] = msg(role="")
        elif after == ("op", "="):
            self.env[name], _ = self.expr(i + n + 2)
        elif after == ("op", "{"):
            v, _ = self.brace(i + n + 1)
            self.env[name] = self.construct(typ, v)
        else:
            raise Unsupported(f"statement {typ} {name}")

    def construct(self, typ, v):
        if typ == "common_chat_tool":
            return {"name": v[0], "description": v[1], "parameters": v[2]}
        if typ == "common_chat_msg":
            calls = [call(*c) for c in (v[3] if len(v) > 3 else [])]
            fields = v + [""] * (7 - len(v))
            return msg(fields[0], fields[1], fields[4], calls, fields[5], fields[6])
        return v

    # ---- one case --------------------------------------------------------------------------------
    def case(self, i, tester):
        i += 3
        text, i = self.args(i)
        c = {"template": Path(self.testers[tester]).name, "input": text[0], "tools": [],
             "reasoning_format": "COMMON_REASONING_FORMAT_NONE", "enable_thinking": True,
             "parallel_tool_calls": False, "tool_choice": "COMMON_CHAT_TOOL_CHOICE_AUTO",
             "json_schema": "", "is_partial": False, "messages": None, "add_generation_prompt": True,
             "continue_final_message": "COMMON_CHAT_CONTINUATION_NONE", "expect": msg()}
        while self.tok(i) == ("op", "."):
            method = self.tok(i + 1)[1]
            args, i = self.args(i + 2)
            if method == "run":
                break
            self.apply(c, method, args)
        self.cases.append(c)

    def apply(self, c, method, args):
        expect = c["expect"]
        if method == "expect":
            c["expect"] = dict(args[0], tool_calls=[dict(x) for x in args[0]["tool_calls"]])
        elif method == "expect_content":
            expect["content"] = args[0]
        elif method == "expect_reasoning":
            expect["reasoning_content"] = args[0]
        elif method == "expect_tool_calls":
            expect["tool_calls"] = [call(*(x if isinstance(x, list) else [x])) for x in args[0]]
        elif method == "tools":
            c["tools"] = [t if isinstance(t, dict) else self.construct("common_chat_tool", t) for t in args[0]]
        elif method == "messages":
            c["messages"] = args[0]
        elif method in ("reasoning_format", "enable_thinking", "parallel_tool_calls", "tool_choice",
                        "json_schema", "is_partial", "add_generation_prompt", "continue_final_message"):
            c[method] = args[0]
        elif method != "expect_reconstruction":
            raise Unsupported(method)


def fixup_calls(cases):
    """Brace-initialised tool calls come as lists: (name, arguments, id) with `{}` for ""."""
    for c in cases:
        for tc in c["expect"]["tool_calls"]:
            for k in ("arguments", "id"):
                if isinstance(tc[k], list):
                    tc[k] = ""


def functions(w: Walker):
    """The file's `static void NAME(params) { body }` functions: name → (param names, body span)."""
    toks = w.toks
    for i in range(len(toks) - 3):
        if toks[i] == ("id", "static") and toks[i + 1] == ("id", "void") and toks[i + 3] == ("op", "("):
            close = w.skip_parens(i + 3)
            if w.tok(close) != ("op", "{"):
                continue
            params = [toks[k - 1][1] for k in range(i + 4, close) if toks[k] in (("op", ","), ("op", ")"))]
            end = w.block_end(close)
            w.funcs[toks[i + 2][1]] = (params, (close + 1, end - 1))


def main(root: str) -> None:
    src = (Path(root) / "tests" / "test-chat.cpp").read_text()
    w = Walker(tokenize(src))
    functions(w)
    # the file's constants: top-level tool and message declarations
    for i in range(len(w.toks) - 2):
        if w.toks[i][0] == "id" and w.toks[i][1] in GLOBAL_TYPES and w.toks[i - 1][1] in ("static", "const"):
            start = i - 2 if w.toks[i - 2][1] in ("static", "const") else i - 1
            w.statement(start, len(w.toks))
    top = len(w.skipped)
    params, (b0, b1) = w.funcs["test_template_output_peg_parsers"]
    w.walk(b0, b1)
    fixup_calls(w.cases)
    json.dump(w.cases, sys.stdout, indent=1, ensure_ascii=False)
    print(f"{len(w.cases)} cases; skipped {len(w.skipped) - top} statements", file=sys.stderr)
    for s in w.skipped[top:]:
        print("  skipped:", s, file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
