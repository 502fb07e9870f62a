"""Every sampling knob `core.Sampling` declares is read by all three dialects, under each dialect's
own names and bounds, and is one of its known fields (never logged as ignored): a knob added to
`Sampling` is covered here without touching this file."""
from __future__ import annotations

from dataclasses import fields

import pytest

from unsloth_min.core import ApiError, Sampling
from unsloth_min.dialects import anthropic_messages, common, openai_chat, openai_responses

BODIES = {  # the least each dialect needs
    "openai": (openai_chat, {"messages": [{"role": "user", "content": "hi"}]}),
    "anthropic": (anthropic_messages, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}),
    "responses": (openai_responses, {"input": "hi"}),
}
KNOBS = [(d, f) for d in BODIES for f in fields(Sampling)]


def wire_names(dialect: str, f) -> tuple[str, ...]:
    return f.metadata["knob"].names.get(dialect, (f.name,))


def a_value(dialect: str, f):
    k = f.metadata["knob"]
    if k.kind == "stops":
        return ["END"], ("END",)
    if k.kind == "bias":
        return {"7": -100, "3": 2.5}, ((3, 2.5), (7, -100.0))
    lo, hi = k.ranges.get(dialect, (k.lo, k.hi))
    value = lo + 1 if hi is None or hi - lo >= 2 else (lo + hi) / 2
    value = int(value) if k.integer else value
    return value, value


@pytest.mark.parametrize("dialect, f", KNOBS, ids=[f"{d}-{f.name}" for d, f in KNOBS])
def test_each_knob_is_read_under_each_name_and_known(dialect, f, monkeypatch):
    module, body = BODIES[dialect]
    said = []
    monkeypatch.setattr(common, "ignored", said.append)
    monkeypatch.setattr(module, "ignore_unknown", lambda b, known: said.extend(b.keys() - known))
    for name in wire_names(dialect, f):
        sent, meant = a_value(dialect, f)
        req = module.parse_request(dict(body, **{name: sent}))
        assert getattr(req.sampling, f.name) == meant, name
    assert not said


@pytest.mark.parametrize("dialect, f", KNOBS, ids=[f"{d}-{f.name}" for d, f in KNOBS])
def test_each_knob_out_of_range_is_a_400_naming_it(dialect, f):
    module, body = BODIES[dialect]
    k = f.metadata["knob"]
    lo, hi = k.ranges.get(dialect, (k.lo, k.hi))
    for name in wire_names(dialect, f):
        bad = ["END", 5] if k.kind == "stops" else (hi + 1 if hi is not None else lo - 1)
        bad = {"3": bad} if k.kind == "bias" else bad
        with pytest.raises(ApiError) as e:
            module.parse_request(dict(body, **{name: bad}))
        assert (e.value.status, e.value.param) == (400, name)


def test_the_dialects_spell_max_tokens_and_stop_their_own_way():
    chat = openai_chat.parse_request(dict(BODIES["openai"][1], max_tokens=5, max_completion_tokens=7))
    assert chat.sampling.max_tokens == 7  # max_completion_tokens wins
    resp = openai_responses.parse_request({"input": "hi", "max_output_tokens": 6, "stop": ["x"]})
    assert (resp.sampling.max_tokens, resp.sampling.stop) == (6, ())  # Responses has no stop
    with pytest.raises(ApiError):  # Anthropic's temperature stops at 1
        anthropic_messages.parse_request(dict(BODIES["anthropic"][1], temperature=1.5))


@pytest.mark.parametrize("bad", [[[3, 1]], {"the": 1}, {"-3": 1}, {"3": True}, {"3": "1"},
                                 {"3": None}, {str(i): 1 for i in range(1025)}])
def test_logit_bias_takes_an_object_of_token_ids_to_numbers(bad):
    with pytest.raises(ApiError) as e:
        openai_chat.parse_request(dict(BODIES["openai"][1], logit_bias=bad))
    assert (e.value.status, e.value.param) == (400, "logit_bias")
    assert openai_chat.parse_request(dict(BODIES["openai"][1], logit_bias={})).sampling.logit_bias == ()
