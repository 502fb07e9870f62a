"""The prompt cache through the real server and the official SDKs, in all three dialects: with one
slot, every other conversation takes it, so a returning one is restored — from RAM, then, after a
restart (`--cache-ram 0`: every restore from disk), from disk — and answers the cold text, with the
restored tokens counted as cached in each dialect's usage."""
from __future__ import annotations

import anthropic
import openai
import pytest

from support.servers import KEY, start_server_process, stop_server_process

pytestmark = pytest.mark.model
FACTS = " ".join(f"Fact {i}: the lighthouse on island {i} was painted in {1800 + i}." for i in range(70))
QUESTION = FACTS + "\nWhich lighthouse was painted first?"


def chat(server, text: str) -> tuple[str, int]:
    c = openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": text}],
                                  max_tokens=16, temperature=0)
    return r.choices[0].message.content, r.usage.prompt_tokens_details.cached_tokens


def messages(server, text: str) -> tuple[str, int]:
    c = anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)
    r = c.messages.create(model="m", messages=[{"role": "user", "content": text}], max_tokens=16,
                          extra_body={"temperature": 0})  # (this SDK no longer takes it as an argument)
    return r.content[0].text, r.usage.cache_read_input_tokens


def responses(server, text: str) -> tuple[str, int]:
    c = openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)
    r = c.responses.create(model="m", input=text, max_output_tokens=16, temperature=0)
    return r.output_text, r.usage.input_tokens_details.cached_tokens


def test_a_returning_conversation_is_restored_from_ram_and_disk_in_every_dialect(tmp_path):
    home = str(tmp_path)
    server = start_server_process(home, "-np", "1", "-c", "4096")
    try:
        cold, cached = chat(server, QUESTION)
        assert cached == 0
        for i, ask in enumerate((messages, responses, chat)):
            chat(server, f"Something else, number {i}.")  # takes the only slot
            text, cached = ask(server, QUESTION)
            assert text == cold and cached > 1000, ask.__name__
        assert server.log_text().count("restored from RAM") == 3
    finally:
        assert stop_server_process(server) == 0
    server = start_server_process(home, "-np", "1", "-c", "4096", "--cache-ram", "0")
    try:
        for i, ask in enumerate((chat, messages, responses)):
            text, cached = ask(server, QUESTION)
            assert text == cold and cached > 1000, ask.__name__
            chat(server, f"Another thing, number {i}.")
        assert server.log_text().count("restored from disk") == 3
    finally:
        assert stop_server_process(server) == 0
