"""Log-scale latency histograms that add up: per-minute rollups keep bucket counts, percentiles come from their sum.

Bucket ``b`` holds values in ``[GROWTH**b, GROWTH**(b+1))`` milliseconds (bucket 0 also holds everything below
1 ms). With a growth of 1.1 a percentile read back from the buckets is within 5% of the true value, for any range
from sub-millisecond API calls to hour-long queue waits, in a few hundred buckets at most.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

GROWTH = 1.1
_LOG_GROWTH = math.log(GROWTH)
MAX_BUCKET = 250
"""1.1**250 ms is about 8 months: anything longer is clamped into the last bucket."""


def bucket_of(milliseconds: float) -> int:
    if milliseconds < 1:
        return 0
    return min(MAX_BUCKET, int(math.log(milliseconds) / _LOG_GROWTH))


def representative(bucket: int) -> float:
    """The geometric middle of a bucket: the value a percentile in this bucket is reported as."""
    return float(GROWTH ** (bucket + 0.5))


def percentile(counts: Iterable[tuple[int, int]], q: float) -> float | None:
    """The ``q``-quantile (0..1) of ``(bucket, count)`` pairs, in milliseconds; None for no data."""
    ordered = sorted((b, c) for b, c in counts if c > 0)
    total = sum(c for _, c in ordered)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bucket, count in ordered:
        seen += count
        if seen >= rank:
            return round(representative(bucket), 3)
    return round(representative(ordered[-1][0]), 3)
