"""What the hypothesis fuzzers share: their budget (`UNSLOTH_MIN_FUZZ` examples per test; `make
fuzz` raises it) and how they print what the inputs reached."""
from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("UNSLOTH_MIN_FUZZ", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def report(capsys, name: str, stats: Counter) -> None:
    with capsys.disabled():
        print(f"\nfuzz {name}: {dict(sorted(stats.items()))}")
