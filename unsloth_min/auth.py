"""API keys: minting, salted hashes on disk, constant-time checks.

Strategy: a key is `sk-unsloth-` + 32 hex chars of CSPRNG output. The store is one JSON file,
`<home>/keys.json` (mode 0600, directory 0700), holding per key a random salt and
sha256(salt + key) plus harmless metadata (id, name, a 4-hex-char prefix, created, last used);
the key itself is returned once by `create` and never written, logged or echoed again. Every
mutation re-reads the file, applies the change and replaces the file atomically (temp file +
os.replace), so a `keys revoke` from the CLI is seen by a running server on its next check (the
server re-reads the file when its stat changes). `last_used` is kept in memory on every hit and
written at most once a minute per key.

What it does not do: no cross-process file lock (the read-modify-replace window is tiny and
each write is atomic, so the file is never torn, but two simultaneous writers can lose one
update); no scopes, expiry or rate limits; no command line (`keys …` lives in cli.py); no HTTP —
`Authenticator.check` takes plain header pairs and says yes or no, the caller renders the 401.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

log = logging.getLogger(__name__)

KEY_PREFIX = "sk-unsloth-"
KEY_SECRET_HEX = 32  # secrets.token_hex(16): 128 random bits
KEY_LENGTH = len(KEY_PREFIX) + KEY_SECRET_HEX
SHOWN_SECRET_CHARS = 4  # hex chars of the secret shown in `keys list`: 16 of 128 bits, harmless
STORE_FILE = "keys.json"
STORE_VERSION = 1
LAST_USED_FLUSH_S = 60.0  # persist last_used at most this often per key: no write per request
MAX_PRESENTED_CHARS = 512  # longer header values are rejected before hashing


class KeyStoreError(Exception):
    """The key store file exists but cannot be read or parsed; the message names the file."""


def mint_key() -> str:
    return KEY_PREFIX + secrets.token_hex(KEY_SECRET_HEX // 2)


def default_home() -> Path:
    return Path(os.environ.get("UNSLOTH_MIN_HOME") or "~/.unsloth_min").expanduser()


def _hash(salt: str, key: str) -> str:
    # A fast salted hash is enough here: keys are 128 bits of CSPRNG output, so guessing them
    # is infeasible however fast the hash is. Slow KDFs (pbkdf2, scrypt) exist to stretch
    # low-entropy passwords; they would only slow every request. The salt stops precomputed
    # tables and makes equal keys in two stores hash differently.
    return hashlib.sha256(bytes.fromhex(salt) + key.encode("utf-8")).hexdigest()


def _looks_like_key(key: str) -> bool:
    return len(key) == KEY_LENGTH and key.startswith(KEY_PREFIX)


@dataclass
class KeyRecord:
    id: str
    name: str
    prefix: str
    created: float
    last_used: float | None
    salt: str
    hash: str


# The type each stored field must have; a table, so validation is one loop.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "name": (str,),
    "prefix": (str,),
    "created": (int, float),
    "last_used": (int, float, type(None)),
    "salt": (str,),
    "hash": (str,),
}
assert set(_FIELD_TYPES) == {f.name for f in fields(KeyRecord)}


def _record_from_json(item: object) -> KeyRecord:
    if not isinstance(item, dict):
        raise ValueError("a key entry is not an object")
    for name, types in _FIELD_TYPES.items():
        value = item.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            raise ValueError(f"a key entry has a missing or invalid {name!r}")
    return KeyRecord(**{name: item[name] for name in _FIELD_TYPES})


def _parse_store(text: str) -> list[KeyRecord]:
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("version") != STORE_VERSION:
        raise ValueError(f"expected an object with \"version\": {STORE_VERSION}")
    if not isinstance(data.get("keys"), list):
        raise ValueError("expected a \"keys\" list")
    return [_record_from_json(item) for item in data["keys"]]


def _render_store(records: list[KeyRecord]) -> bytes:
    data = {"version": STORE_VERSION, "keys": [asdict(r) for r in records]}
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


class KeyStore:
    """The keys of one home directory. Reads are cached until the file's stat changes."""

    def __init__(self, home: Path, clock: Callable[[], float] = time.time):
        self.home = Path(home)
        self.path = self.home / STORE_FILE
        self._clock = clock  # injected so tests move time without sleeping
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int] | None, list[KeyRecord]] | None = None
        self._used: dict[str, float] = {}  # id -> last use seen by this process
        self._flushed: dict[str, float] = {}  # id -> when this process last wrote last_used

    # -- public API --------------------------------------------------------------------------

    def create(self, name: str = "") -> tuple[KeyRecord, str]:
        key = mint_key()
        salt = secrets.token_hex(16)
        prefix = key[: len(KEY_PREFIX) + SHOWN_SECRET_CHARS] + "…"

        def add(records: list[KeyRecord]) -> KeyRecord:
            taken = {r.id for r in records}
            key_id = secrets.token_hex(4)
            while key_id in taken:
                key_id = secrets.token_hex(4)
            record = KeyRecord(key_id, name, prefix, self._clock(), None, salt, _hash(salt, key))
            records.append(record)
            return record

        record = self._mutate(add)
        log.info("created API key id=%s name=%r in %s", record.id, record.name, self.path)
        return record, key

    def records(self) -> list[KeyRecord]:
        return list(self._current())

    def revoke(self, key_id: str) -> bool:
        def remove(records: list[KeyRecord]) -> bool:
            kept = [r for r in records if r.id != key_id]
            found = len(kept) != len(records)
            records[:] = kept
            return found

        if not any(r.id == key_id for r in self._current()):
            return False  # nothing to change: don't rewrite the file
        found = self._mutate(remove)
        if found:
            log.info("revoked API key id=%s", key_id)
        return found

    def verify(self, key: str) -> KeyRecord | None:
        if not _looks_like_key(key):
            return None  # every stored key has this shape; saves hashing garbage
        match = None
        for record in self._current():
            # Hash against every record (no early exit) and compare in constant time.
            if hmac.compare_digest(_hash(record.salt, key), record.hash) and match is None:
                match = record
        if match is not None:
            self._touch(match)
        return match

    def is_empty(self) -> bool:
        return not self._current()

    # -- last_used ---------------------------------------------------------------------------

    def _touch(self, record: KeyRecord) -> None:
        now = self._clock()
        record.last_used = now
        self._used[record.id] = now
        if now - self._flushed.get(record.id, float("-inf")) < LAST_USED_FLUSH_S:
            return
        self._flushed[record.id] = now

        def stamp(records: list[KeyRecord]) -> None:
            for r in records:  # re-read from disk: a key revoked meanwhile stays revoked
                if r.id == record.id:
                    r.last_used = max(r.last_used or 0.0, now)

        try:
            self._mutate(stamp)
        except (OSError, KeyStoreError) as e:  # the request is still authenticated
            log.warning("could not record last_used for key id=%s: %s", record.id, e)

    def _overlay_used(self, records: list[KeyRecord]) -> list[KeyRecord]:
        for r in records:
            seen = self._used.get(r.id)
            if seen is not None and (r.last_used is None or seen > r.last_used):
                r.last_used = seen
        return records

    # -- file I/O ----------------------------------------------------------------------------

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _current(self) -> list[KeyRecord]:
        with self._lock:
            sig = self._signature()
            if self._cache is None or self._cache[0] != sig:
                self._cache = (sig, self._overlay_used(self._read()))
            return self._cache[1]

    def _read(self) -> list[KeyRecord]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as e:
            raise KeyStoreError(f"cannot read API key store {self.path}: {e}") from None
        try:
            return _parse_store(text)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            raise KeyStoreError(
                f"API key store {self.path} is corrupt ({e}); fix or move it away — "
                "it was left untouched"
            ) from None

    def _mutate(self, change: Callable[[list[KeyRecord]], object]) -> object:
        with self._lock:
            records = self._read()  # fresh from disk: other processes may have written
            result = change(records)
            self._write(records)
            self._cache = (self._signature(), self._overlay_used(records))
            return result

    def _ensure_home(self) -> None:
        if self.home.is_dir():
            if stat.S_IMODE(self.home.stat().st_mode) & 0o077:
                log.warning("%s is accessible to other users; chmod 700 it", self.home)
            return
        self.home.mkdir(mode=0o700, parents=True)
        os.chmod(self.home, 0o700)  # mkdir's mode is filtered by the umask

    def _write(self, records: list[KeyRecord]) -> None:
        self._ensure_home()
        tmp = self.home / f".{STORE_FILE}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_render_store(records))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class Authenticator:
    """Says whether request headers carry a valid key: a stored one or a --api-key value."""

    def __init__(self, store: KeyStore | None, extra_keys: Iterable[str] = ()):
        self.store = store
        # --api-key values live only as hashes under a per-process salt.
        self._salt = secrets.token_hex(16)
        self._extra = [_hash(self._salt, k) for k in extra_keys if k]

    def key_from_headers(self, headers: list[tuple[str, str]]) -> str | None:
        for name, value in headers:
            if name == "authorization":
                scheme, _, token = value.strip().partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    return token.strip()
        for name, value in headers:
            if name == "x-api-key" and value.strip():
                return value.strip()
        return None

    def check(self, headers: list[tuple[str, str]]) -> bool:
        key = self.key_from_headers(headers)
        if key is None or len(key) > MAX_PRESENTED_CHARS:
            return False
        digest = _hash(self._salt, key)
        # Compare against every extra key (no early exit), then the store.
        hits = [hmac.compare_digest(digest, h) for h in self._extra]
        if any(hits):
            return True
        if self.store is None:
            return False
        try:
            return self.store.verify(key) is not None
        except KeyStoreError as e:  # fail closed, and say why in the server log
            log.error("%s", e)
            return False


def ensure_key(store: KeyStore, extra_keys: list[str]) -> str | None:
    """Mint and store a key named "default" when there is no key at all; return it once."""
    if any(extra_keys) or not store.is_empty():
        return None
    record, key = store.create("default")
    log.info("no API key configured: minted key id=%s", record.id)
    return key
