"""Two paths that run all the time, against their floor measured in the same run.

| row | what is timed | baseline |
|---|---|---|
| landing sensor tick | one evaluation over 10,000 landed files (9 days), one new file since the last tick, through ``evaluate_tick`` like the daemon | listing the folder with sizes and times (``LandingFolder.list``), which any tick must do |
| PII tokens | ``security.pseudonymise.tokens`` of 200,000 e-mail addresses | ``hmac.new(key, value, sha256)`` in a plain Python loop |

Targets (issue 4 and the security work): a tick well under a second (checked: < 1 s), tokens of
200,000 values under a second. Medians of ``--repeats`` runs; a smoke run with ``--quick``.

Usage::

    python benchmarks/bench_hot_paths.py             # median of 5 (~30 s)
    python benchmarks/bench_hot_paths.py --check     # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from de_assets.security.pseudonymise import PiiKey, tokens
from de_assets_tests.orchestration.test_landing_sensor import FIRST, Landing, name, requested

FILES = 10_000
DAYS = 9
TOKENS = 200_000
TARGET_SECONDS = 1.0


def median_seconds(
    call: Callable[[], object], repeats: int, before: Callable[[], object] = lambda: None
) -> float:
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_sensor(repeats: int) -> tuple[float, float]:
    """(tick, listing) medians over a folder of FILES files, one new file before each tick."""
    with tempfile.TemporaryDirectory(prefix="bench_sensor_") as folder:
        landing = Landing(Path(folder))
        days = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]
        for i in range(FILES):
            (landing.root / name(days[i % DAYS], i // DAYS)).write_bytes(b"{}\n")
        assert sorted(requested(landing.tick())) == days
        parts = iter(range(FILES, FILES + repeats))

        def one_new_file() -> None:
            landing.land(days[3], next(parts))

        def tick() -> None:
            assert list(requested(landing.tick())) == [days[3]]

        ticked = median_seconds(tick, repeats, before=one_new_file)
        listed = median_seconds(lambda: list(landing.folder.list()), repeats)
        landing.instance.dispose()
    return ticked, listed


def bench_tokens(repeats: int) -> tuple[float, float]:
    key = PiiKey.from_text("k" * 64)
    values = pd.Series([f"customer.{i}@example.com" for i in range(TOKENS)], dtype="str")
    tokens(key, values.head(10), "email")  # warm-up
    ours = median_seconds(lambda: tokens(key, values, "email"), repeats)
    raw = [v.encode() for v in values]
    floor = median_seconds(lambda: [hmac.new(key.secret, v, hashlib.sha256).digest() for v in raw], repeats)
    return ours, floor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    ticked, listed = bench_sensor(args.repeats)
    ours, floor = bench_tokens(args.repeats)
    rows = [
        (f"landing sensor tick, {FILES:,} files", ticked, f"listing {listed:.3f} s", ticked / listed),
        (f"PII tokens, {TOKENS:,} values", ours, f"plain hmac loop {floor:.3f} s", ours / floor),
    ]
    print(f"median of {args.repeats}")
    for label, seconds, baseline, ratio in rows:
        verdict = "OK" if seconds < TARGET_SECONDS else "OVER TARGET"
        print(
            f"{label:<34} {seconds:7.3f} s   vs {baseline:<26} ratio {ratio:5.2f}   (< {TARGET_SECONDS:g} s: {verdict})"
        )
    missed = [label for label, seconds, *_ in rows if seconds >= TARGET_SECONDS]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
