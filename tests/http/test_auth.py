"""Tests for unsloth_min.auth: key format, the on-disk store, header extraction, the CLI."""

import io
import json
import logging
import os
import re
import stat
import threading

import pytest

from unsloth_min.auth import (
    KEY_PREFIX,
    Authenticator,
    KeyStore,
    KeyStoreError,
    default_home,
    ensure_key,
    mint_key,
)
from unsloth_min.cli import keys_command

KEY_RE = re.compile(r"^sk-unsloth-[0-9a-f]{32}$")


class Clock:
    """A clock tests move by hand, so nothing sleeps."""

    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def bearer(key, scheme="Bearer"):
    return [("authorization", f"{scheme} {key}")]


# -- format and home -----------------------------------------------------------------------------


def test_mint_key_format_and_uniqueness():
    keys = {mint_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(KEY_RE.match(k) for k in keys)


def test_default_home(monkeypatch, tmp_path):
    monkeypatch.setenv("UNSLOTH_MIN_HOME", str(tmp_path / "h"))
    assert default_home() == tmp_path / "h"
    monkeypatch.delenv("UNSLOTH_MIN_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_home() == tmp_path / ".unsloth_min"


# -- the store on disk ---------------------------------------------------------------------------


def test_create_stores_hash_and_salt_not_the_key(tmp_path):
    home = tmp_path / "home"
    record, key = KeyStore(home).create("laptop")
    assert KEY_RE.match(key)
    raw = (home / "keys.json").read_bytes()
    secret = key[len(KEY_PREFIX):]
    assert key.encode() not in raw
    assert secret.encode() not in raw
    assert secret[:8].encode() not in raw  # not even a chunk of it beyond the 4 shown chars
    data = json.loads(raw)
    (entry,) = data["keys"]
    assert entry["hash"] == record.hash and entry["salt"] == record.salt
    assert re.fullmatch(r"[0-9a-f]{64}", entry["hash"])
    assert re.fullmatch(r"[0-9a-f]{32}", entry["salt"])
    assert re.fullmatch(r"[0-9a-f]{8}", entry["id"])
    assert entry["name"] == "laptop" and entry["last_used"] is None
    assert entry["prefix"] == key[: len(KEY_PREFIX) + 4] + "…"


def test_salts_differ_per_key(tmp_path):
    store = KeyStore(tmp_path)
    (a, _), (b, _) = store.create(), store.create()
    assert a.salt != b.salt and a.hash != b.hash and a.id != b.id


def test_file_and_dir_modes(tmp_path):
    old = os.umask(0o022)
    try:
        home = tmp_path / "deep" / "home"
        store = KeyStore(home)
        _, key = store.create()
        assert mode(home) == 0o700
        assert mode(home / "keys.json") == 0o600
        # rewritten by revoke and by a last_used flush: still 0600, no temp files left
        store.verify(key)
        store.create()
        store.revoke(store.records()[-1].id)
        assert mode(home / "keys.json") == 0o600
        assert sorted(p.name for p in home.iterdir()) == ["keys.json"]
    finally:
        os.umask(old)


def test_missing_file_is_empty_and_not_created(tmp_path):
    store = KeyStore(tmp_path / "nothing")
    assert store.is_empty() and store.records() == []
    assert store.verify(mint_key()) is None
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"version": 1}',
                                     b'{"version": 1, "keys": [{"id": "x"}]}', b"\xff\xfe"])
def test_corrupt_file_raises_clear_error_and_is_left_alone(tmp_path, content):
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    store = KeyStore(tmp_path)
    with pytest.raises(KeyStoreError, match=re.escape(str(path))):
        store.records()
    with pytest.raises(KeyStoreError):
        store.create()
    assert path.read_bytes() == content


# -- verify --------------------------------------------------------------------------------------


def test_verify_right_wrong_revoked(tmp_path):
    store = KeyStore(tmp_path)
    record, key = store.create("a")
    _, other = store.create("b")
    assert store.verify(key).id == record.id
    assert store.verify(other).id != record.id
    assert store.verify(mint_key()) is None
    assert store.verify(key[:-1] + ("0" if key[-1] != "0" else "1")) is None
    assert store.verify("") is None and store.verify("garbage") is None
    assert store.revoke(record.id) is True
    assert store.verify(key) is None
    assert store.verify(other) is not None
    assert store.revoke(record.id) is False


def test_revoke_from_another_process_is_seen(tmp_path):
    server = KeyStore(tmp_path)
    record, key = server.create()
    assert server.verify(key) is not None
    assert KeyStore(tmp_path).revoke(record.id)  # e.g. `keys revoke` while the server runs
    assert server.verify(key) is None


def test_last_used_in_memory_and_flushed_at_most_once_a_minute(tmp_path):
    clock = Clock()
    store = KeyStore(tmp_path, clock=clock)
    record, key = store.create()
    path = tmp_path / "keys.json"

    def on_disk():
        return json.loads(path.read_text())["keys"][0]["last_used"]

    clock.t += 5
    assert store.verify(key).last_used == clock.t
    assert on_disk() == clock.t  # first use is written
    first = clock.t
    before = path.stat()
    clock.t += 30
    assert store.verify(key).last_used == clock.t  # seen in memory...
    assert store.records()[0].last_used == clock.t
    assert on_disk() == first  # ...but not written yet
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    clock.t += 31
    store.verify(key)
    assert on_disk() == clock.t
    assert KeyStore(tmp_path).records()[0].last_used == clock.t


def test_last_used_flush_does_not_resurrect_revoked_key(tmp_path):
    clock = Clock()
    server = KeyStore(tmp_path, clock=clock)
    record, key = server.create()
    _, other = server.create()
    server.verify(key)
    KeyStore(tmp_path).revoke(record.id)
    clock.t += 120
    server.verify(other)  # flushes other's last_used from a fresh read
    assert [r.id for r in KeyStore(tmp_path).records()] == [server.verify(other).id]


# -- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    [("authorization", "Bearer K")],
    [("authorization", "bearer K")],
    [("authorization", "BEARER   K  ")],
    [("x-api-key", "K")],
    [("x-api-key", " K ")],
    [("authorization", "Basic Zm9vOmJhcg=="), ("x-api-key", "K")],
    [("content-type", "application/json"), ("authorization", "Bearer K")],
])
def test_key_from_headers_found(headers):
    assert Authenticator(None).key_from_headers(headers) == "K"


@pytest.mark.parametrize("headers", [
    [],
    [("content-type", "application/json")],
    [("authorization", "Basic Zm9vOmJhcg==")],
    [("authorization", "Bearer")],
    [("authorization", "Bearer   ")],
    [("authorization", "K")],
    [("x-api-key", "")],
])
def test_key_from_headers_missing(headers):
    assert Authenticator(None).key_from_headers(headers) is None


def test_check_with_store(tmp_path):
    store = KeyStore(tmp_path)
    record, key = store.create()
    a = Authenticator(store)
    assert a.check(bearer(key))
    assert a.check(bearer(key, "bearer"))
    assert a.check([("x-api-key", key)])
    assert not a.check(bearer(key, "Basic"))
    assert not a.check([])
    assert not a.check(bearer(mint_key()))
    assert not a.check(bearer("x" * 100_000))
    store.revoke(record.id)
    assert not a.check(bearer(key))


def test_extra_keys_accepted_and_not_persisted(tmp_path):
    store = KeyStore(tmp_path)
    a = Authenticator(store, extra_keys=["my-secret-1", "sk-unsloth-" + "a" * 32])
    assert a.check(bearer("my-secret-1"))
    assert a.check([("x-api-key", "sk-unsloth-" + "a" * 32)])
    assert not a.check(bearer("my-secret-2"))
    assert not (tmp_path / "keys.json").exists()
    assert "my-secret-1" not in repr(vars(a))  # held only as salted hashes
    assert Authenticator(None, ["only"]).check(bearer("only"))
    assert not Authenticator(None).check(bearer("anything"))  # nothing configured: fail closed


def test_check_fails_closed_on_corrupt_store(tmp_path, caplog):
    store = KeyStore(tmp_path)
    _, key = store.create()
    (tmp_path / "keys.json").write_text("oops")
    assert not Authenticator(store).check(bearer(key))
    assert "keys.json" in caplog.text and key not in caplog.text


def test_keys_never_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="unsloth_min")
    clock = Clock()
    store = KeyStore(tmp_path / "h", clock=clock)
    key = ensure_key(store, [])
    record, key2 = store.create("x")
    a = Authenticator(store, ["extra-secret"])
    for k in (key, key2, "extra-secret", mint_key()):
        a.check(bearer(k))
        clock.t += 100
    store.revoke(record.id)
    assert caplog.records  # something was logged...
    assert "extra-secret" not in caplog.text  # ...but never a key, nor its secret part
    for k in (key, key2):
        assert k not in caplog.text
        assert k[len(KEY_PREFIX):] not in caplog.text


# -- ensure_key ----------------------------------------------------------------------------------


def test_ensure_key_mints_only_when_empty(tmp_path):
    store = KeyStore(tmp_path)
    assert ensure_key(store, ["from-flag"]) is None
    assert store.is_empty()
    key = ensure_key(store, [])
    assert KEY_RE.match(key)
    (record,) = store.records()
    assert record.name == "default"
    assert store.verify(key) is not None
    assert ensure_key(store, []) is None
    assert len(store.records()) == 1


# -- keys_command --------------------------------------------------------------------------------


def run(argv, home):
    out = io.StringIO()
    rc = keys_command(argv, home, out=out)
    return rc, out.getvalue()


def test_keys_create_prints_key_once(tmp_path):
    rc, text = run(["create", "--name", "laptop"], tmp_path)
    assert rc == 0
    keys = re.findall(r"sk-unsloth-[0-9a-f]{32}", text)
    assert len(keys) == 1
    (record,) = KeyStore(tmp_path).records()
    assert record.id in text and "laptop" in text
    assert KeyStore(tmp_path).verify(keys[0]) is not None


def test_keys_list_never_prints_key_or_hash(tmp_path):
    rc, text = run(["list"], tmp_path)
    assert rc == 0 and "No API keys" in text
    _, created = run(["create", "--name", "laptop"], tmp_path)
    key = re.search(r"sk-unsloth-[0-9a-f]{32}", created).group()
    run(["create"], tmp_path)
    KeyStore(tmp_path).verify(key)
    rc, text = run(["list"], tmp_path)
    assert rc == 0
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "NAME", "PREFIX", "CREATED", "LAST", "USED"]
    assert len(lines) == 3
    records = KeyStore(tmp_path).records()
    for r in records:
        assert r.id in text and r.prefix in text
        assert r.hash not in text and r.salt not in text
    assert key not in text and key[len(KEY_PREFIX):] not in text
    assert "laptop" in text and "never" in text  # the second key was never used


def test_keys_revoke(tmp_path, capsys):
    record, key = KeyStore(tmp_path).create()
    assert keys_command(["revoke", "deadbeef"], tmp_path, out=io.StringIO()) == 1
    assert "deadbeef" in capsys.readouterr().err
    assert keys_command(["revoke", key], tmp_path, out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert err and key not in err  # a pasted key is never echoed
    rc, text = run(["revoke", record.id], tmp_path)
    assert rc == 0 and record.id in text
    assert KeyStore(tmp_path).is_empty()


def test_keys_bad_usage_and_corrupt_store(tmp_path, capsys):
    assert keys_command([], tmp_path, out=io.StringIO()) == 2
    assert keys_command(["frobnicate"], tmp_path, out=io.StringIO()) == 2
    capsys.readouterr()
    (tmp_path / "keys.json").write_text("{")
    assert keys_command(["list"], tmp_path, out=io.StringIO()) == 1
    assert "keys.json" in capsys.readouterr().err


def test_keys_command_default_out_is_current_stdout(tmp_path, capsys):
    assert keys_command(["list"], tmp_path) == 0
    assert "No API keys" in capsys.readouterr().out


def test_store_thread_safety(tmp_path):
    store = KeyStore(tmp_path)
    threads = [threading.Thread(target=store.create, args=(f"k{i}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(KeyStore(tmp_path).records()) == 20
