"""A million listed entries, end to end: the amend the issue measures, on the virtual S3 server.

`bench/virtual_s3.py` serves a table of 500,000 keys, each one data version under one delete marker (the whole
table deleted), from its own process; `airflow-fuse`'s amend runs with its defaults in another (`bench.scale`
runs both). What a user would check: every lost key is current again and no data version was touched (the
server's own exactness check), the requests are the listing's pages and one DeleteObjects per 1,000 markers
(plus a handful), and the restore streams: its memory does not grow with the keys it has restored.
Figures (time, memory per entry) are the benchmark's: `python -m bench.scale`.
"""

from __future__ import annotations

import pytest

from bench.scale import measure

pytestmark = pytest.mark.slow

ENTRIES = 1_000_000
KEYS = ENTRIES // 2


def test_a_million_entries_are_restored_exactly_with_the_fewest_requests():
    result = measure(ENTRIES, 0.0, "vm", "auto")

    assert result["check"] == {"exact": True, "lost_keys": KEYS, "restored_keys": KEYS, "wrong_keys": 0,
                               "violations": 0, "problems": []}
    assert result["listed"] == ENTRIES and result["keys"] == KEYS
    assert result["restored"] == KEYS and result["failed"] == 0
    served = result["served"]
    assert served["DeleteObjects"] == KEYS // 1000  # one per 1,000 markers
    pages = ENTRIES // 1000
    # the listing's pages, plus the parallel listing's split (delimiter discovery, key-marker probes)
    assert pages <= served["ListObjectVersions"] <= pages * 1.3, served
    assert "CopyObject" not in served and "PutObject" not in served  # undelete: no data written
    # streaming: RSS sampled from the restore's first key to its last stays within 96 MiB (a list of an
    # object per restored key would be ~250 MiB here)
    rss = [sample for _, sample in result["restore_rss"]]
    assert len(rss) >= 8 and max(rss) - rss[0] < 96 * 2**20, [r // 2**20 for r in rss]
