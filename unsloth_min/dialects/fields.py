"""Typed reads of JSON request fields, shared by the dialects: wrong type or range → 400 naming it.

Strategy: one small function per JSON type; each takes the object, the key, and the path used in
the error message (`messages[2].content`), and returns the value or the default when absent/null.
JSON booleans are never accepted as numbers (Python's bool is an int).
"""
from __future__ import annotations

import json

from ..core import ApiError, Text, bad_request


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_error(name: str, expected: str, value) -> ApiError:
    got = "null" if value is None else type(value).__name__.replace("dict", "object").replace("list", "array")
    return bad_request(f"Invalid type for '{name}': expected {expected}, but got {got}.", param=name)


def require_object(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise _type_error(name, "an object", value)
    return value


def _present(obj: dict, key: str, path: str, required: bool):
    """(value, name); value None when absent or null — a 400 first if the field is required."""
    value, name = obj.get(key), _where(path, key)
    if value is None and required:
        raise bad_request(f"Missing required parameter: '{name}'.", param=name)
    return value, name


def _typed(obj: dict, key: str, default, path: str, required: bool, kind: type, expected: str):
    value, name = _present(obj, key, path, required)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise _type_error(name, expected, value)
    return value


def get_str(obj: dict, key: str, default=None, *, path: str = "", required: bool = False):
    return _typed(obj, key, default, path, required, str, "a string")


def get_choice(obj: dict, key: str, choices, default=None, *, path: str = "",
               required: bool = False, names: str | None = None):
    """A string that must be one of `choices` (a 400 listing them, or `names` when given)."""
    value = get_str(obj, key, default, path=path, required=required)
    if value is not None and value not in choices:
        name = _where(path, key)
        raise bad_request(f"Invalid value for '{name}': {value!r} is not one of "
                          f"{names or ', '.join(choices)}.", param=name)
    return value


def get_bool(obj: dict, key: str, default=None, *, path: str = ""):
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(_where(path, key), "a boolean", value)
    return value


def get_number(obj: dict, key: str, default=None, *, lo=None, hi=None, integer=False, path: str = "",
               required: bool = False):
    value, name = _present(obj, key, path, required)
    if value is None:
        return default
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise _type_error(name, "an integer" if integer else "a number", value)
    if value != value or value in (float("inf"), float("-inf")):
        raise bad_request(f"Invalid value for '{name}': must be finite.", param=name)
    if lo is not None and value < lo:
        raise bad_request(f"Invalid '{name}': {value} is below the minimum value {lo}.", param=name)
    if hi is not None and value > hi:
        raise bad_request(f"Invalid '{name}': {value} is above the maximum value {hi}.", param=name)
    return value


def get_list(obj: dict, key: str, default=None, *, path: str = "", required: bool = False):
    return _typed(obj, key, default, path, required, list, "an array")


def get_object(obj: dict, key: str, default=None, *, path: str = ""):
    value = obj.get(key)
    if value is None:
        return default
    return require_object(value, _where(path, key))


MAX_STOPS = 16


def get_stops(obj: dict, key: str) -> tuple[str, ...]:
    """`stop`: a string or an array of strings."""
    value = obj.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _type_error(key, "a string or an array of strings", value)
    if len(value) > MAX_STOPS:
        raise bad_request(f"Invalid '{key}': at most {MAX_STOPS} stop sequences.", param=key)
    return tuple(s for s in value if s)


MAX_BIASES = 1024


def get_bias(obj: dict, key: str, *, lo: float, hi: float) -> tuple[tuple[int, float], ...]:
    """`logit_bias`: an object of token ID (a string of digits) → a bias from lo to hi; sorted
    (token, bias) pairs. Whether each ID is in the model's vocabulary is the engine's to say."""
    value = obj.get(key)
    if value is None:
        return ()
    biases = require_object(value, key)
    if len(biases) > MAX_BIASES:
        raise bad_request(f"Invalid '{key}': at most {MAX_BIASES} tokens may be biased.", param=key)
    for token, bias in biases.items():
        if not (token.isascii() and token.isdigit()):
            raise bad_request(f"Invalid key in '{key}': {token!r} is not a token ID.", param=key)
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not lo <= bias <= hi:
            raise bad_request(f"Invalid value for '{key}.{token}': expected a number from {lo} to "
                              f"{hi}, but got {json.dumps(bias)}.", param=key)
    return tuple(sorted((int(token), float(bias)) for token, bias in biases.items()))


def get_str_list(obj: dict, key: str, *, path: str = "") -> tuple[str, ...]:
    value = get_list(obj, key, [], path=path)
    if not all(isinstance(s, str) for s in value):
        raise _type_error(_where(path, key), "an array of strings", value)
    return tuple(value)


def objects(obj: dict, key: str, *, path: str = ""):
    """(item, its path) for each item of an optional array of objects (`tools[3]`)."""
    for i, item in enumerate(get_list(obj, key, [], path=path)):
        where = f"{_where(path, key)}[{i}]"
        yield require_object(item, where), where


def content(value, name: str, noun: str, parse_part) -> list:
    """String-or-array content: a string is one Text; an array, `parse_part(item, path)` each
    (a part may read as None: dropped)."""
    if isinstance(value, str):
        return [Text(value)]
    if not isinstance(value, list):
        raise bad_request(f"Invalid type for '{name}': expected a string or an array of {noun}.",
                          param=name)
    parts = (parse_part(item, f"{name}[{i}]") for i, item in enumerate(value))
    return [p for p in parts if p is not None]


def texts(items: list, name: str, kinds=None) -> str:
    """The joined `text` of the parts in `items` whose type is one of `kinds` (None: all)."""
    out = []
    for i, item in enumerate(items):
        item = require_object(item, f"{name}[{i}]")
        if kinds is None or isinstance(item.get("type"), str) and item["type"] in kinds:
            out.append(get_str(item, "text", "", path=f"{name}[{i}]"))
    return "".join(out)
