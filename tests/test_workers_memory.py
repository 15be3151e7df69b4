"""`release_startup_memory`: what a process freed after starting leaves its RSS.

Without it, glibc keeps freed heap pages resident (a worker's import and config-time
garbage, ~4 MB of its 38 in issue 17's measurements). Run in a fresh interpreter so the
numbers are that process's own.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, os
from router.workers import release_startup_memory, rss_bytes
pinned, junk = [], []
for i in range(40000):  # 40 MB in malloc'd chunks; one pinned chunk per 100 keeps the
    junk.append(b"x" * 1000 + bytes([i % 256]))  # heap from shrinking at its top alone
    if i % 100 == 0:
        pinned.append(b"y" * 1000)
del junk
before = rss_bytes(os.getpid())
freed = release_startup_memory()
print(json.dumps({"before": before, "freed": freed, "after": rss_bytes(os.getpid())}))
"""


def test_freed_heap_pages_leave_the_resident_set() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=60)
    r = json.loads(out.stdout)
    assert r["freed"] is not None, "this machine's libc has malloc_trim (glibc)"
    assert r["freed"] > 30_000_000, r  # most of the 40 MB freed by `del` was resident
    assert r["after"] < r["before"] - 30_000_000, r
