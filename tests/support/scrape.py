"""Reading a process's Prometheus `/metrics` the way Prometheus does, for tests.

Invariant: a `Scrape` holds one moment of one or more processes' series, flattened to
(sample name, labels) -> value; sums across processes are what a PromQL `sum` would give.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, frozenset[tuple[str, str]]]


def read(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return str(reply.read().decode())


def parse(text: str) -> dict[Key, float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class Scrape:
    """Samples by process name."""

    by_process: dict[str, dict[Key, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, urls: Mapping[str, str]) -> Scrape:
        return cls({name: parse(read(url)) for name, url in urls.items()})

    def total(self, name: str, processes: Iterable[str] | None = None, **labels: str) -> float:
        """Sum of `name` over the samples whose labels include `labels`, in `processes` (default: all)."""
        wanted = set(labels.items())
        chosen = self.by_process if processes is None else {p: self.by_process[p] for p in processes}
        return sum(
            value
            for samples in chosen.values()
            for (sample, sample_labels), value in samples.items()
            if sample == name and wanted <= sample_labels
        )

    def has(self, name: str, process: str, **labels: str) -> bool:
        wanted = set(labels.items())
        return any(s == name and wanted <= ls for s, ls in self.by_process[process])
