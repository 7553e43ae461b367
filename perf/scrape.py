"""An eager Prometheus: every process's /metrics read once a second while a run measures.

Invariant: scraping runs on its own thread and ends with the block; a scrape that fails is
counted (a process that stopped serving metrics under load is a finding), never retried.
"""

from __future__ import annotations

import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

SCRAPE_SECONDS = 1.0


@contextmanager
def scraping(urls: list[str]) -> Iterator[Counter[str]]:
    """Scrape every URL each SCRAPE_SECONDS until the block ends; yields counts of `rounds` and `errors`."""
    done = threading.Event()
    counts: Counter[str] = Counter()

    def scrape() -> None:
        while not done.wait(SCRAPE_SECONDS):
            for url in urls:
                try:
                    with urllib.request.urlopen(url, timeout=5) as reply:
                        reply.read()
                except OSError:
                    counts["errors"] += 1
            counts["rounds"] += 1

    thread = threading.Thread(target=scrape, name="scraper", daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        done.set()
        thread.join()
