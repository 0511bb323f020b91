# SPDX-License-Identifier: GPL-2.0-or-later
"""TextCodes: codes of text columns read in batches, against a plain dictionary."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from civic311.processing.core.textcodes import TextCodes


def reference_labels(batches):
    """The labels each batch's rows should decode to (None for empty text)."""
    return [[v.decode("utf-8", "replace") or None for v in batch.tolist()] for batch in batches]


def random_batches(rng, distinct: int, batches: int, size: int):
    words = [bytes(rng.integers(97, 123, rng.integers(1, 40)).astype(np.uint8)) for _ in range(distinct)]
    words[0] = b""
    out = []
    for _ in range(batches):
        picked = [words[i] for i in rng.integers(0, distinct, size)]
        width = max(len(w) for w in picked) + int(rng.integers(0, 3))  # the width varies from batch to batch
        out.append(np.array(picked, dtype=f"S{max(width, 1)}"))
    return out


def test_codes_hold_across_batches_and_widths_and_decode_to_the_values():
    """Hundreds of values in batches of varying width: the table grows (rehashing) and probes past taken slots;
    every row decodes to its own value and a value keeps its code from batch to batch."""
    rng = np.random.default_rng(16)
    batches = random_batches(rng, 700, 12, 5_000)
    codes = TextCodes()
    seen: dict[str, int] = {}
    for batch, want in zip(batches, reference_labels(batches)):
        got = codes.codes(batch)
        assert [codes.labels[c] if c >= 0 else None for c in got] == want
        for code, value in zip(got.tolist(), want):
            assert seen.setdefault(value, code) == code  # stable: one code per value, NULL -1
    assert len(codes.labels) == len(set(codes.labels)) == len(seen) - (None in seen)
    assert max(t.probes for t in codes._widths.values()) >= 1  # (the test reaches the probing path)
    for table in codes._widths.values():  # a value found past its home slot is not entered again
        assert len(np.unique(table.keys)) == len(table.keys)


def test_past_the_cache_a_batch_is_factorised_afresh_with_the_same_codes():
    rng = np.random.default_rng(3)
    batches = random_batches(rng, 300, 6, 2_000)
    cached, capped = TextCodes(), TextCodes()
    capped.CACHED = 50  # every batch has more values than that: factorised each time
    for batch, want in zip(batches, reference_labels(batches)):
        a, b = cached.codes(batch), capped.codes(batch)
        assert [capped.labels[c] if c >= 0 else None for c in b] == want
        assert [cached.labels[c] if c >= 0 else None for c in a] == want


def test_a_category_column_is_coded_without_importing_pandas():
    """The streamed count (precinctstats) needs no pandas, whose import took 0.3 s of a million-point count."""
    root = Path(__file__).resolve().parents[2]
    script = (
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {str(root / 'processing')!r})\n"
        "from core.textcodes import TextCodes\n"
        "codes = TextCodes()\n"
        "for width in (12, 14, 12):\n"
        "    out = codes.codes(np.array([b'Pothole', b'Graffiti', b'', b'Pothole'] * 1000, dtype=f'S{width}'))\n"
        "assert out[:4].tolist() == [0, 1, -1, 0], out[:4]\n"
        "assert 'pandas' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", script], check=True)
