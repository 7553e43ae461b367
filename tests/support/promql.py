"""PromQL queries checked against the metric contract (tests/support/metric_names.py).

Invariant: `findings(query)` is empty only if the query parses (promql_parser, after Grafana's
interval variables are replaced by a duration) and every series it selects is one a dispatchd
process or Prometheus exports, read the way its type allows: a counter (and a histogram's
`_bucket`, `_sum` and `_count`, which are counters) only as the range of rate(), irate() or
increase(); a gauge never there; a histogram never by its bare name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import promql_parser

from tests.support.metric_names import EXPORTED, PROMETHEUS, Kind

# What Grafana substitutes before a query reaches Prometheus; any duration parses the same.
GRAFANA_DURATIONS = ("$__rate_interval", "$__interval", "$__range")
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase"})
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
KNOWN: dict[str, Kind] = {**EXPORTED, **PROMETHEUS}
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)")


def series_kind(name: str) -> Kind | None:
    """How a selected series behaves: histogram means its bare (unqueryable) name."""
    if name in KNOWN:
        return KNOWN[name]
    for suffix in HISTOGRAM_SERIES:
        if name.endswith(suffix) and KNOWN.get(name.removesuffix(suffix)) == "histogram":
            return "counter"
    return None


def selectors(node: Any, function: str | None = None) -> Iterator[tuple[str | None, str | None]]:
    """(metric name, the function whose range argument it is) for every selector in node."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node.name, None
    elif isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector.name, function
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from selectors(arg, node.func.name)
    elif isinstance(node, promql_parser.AggregateExpr):
        yield from selectors(node.expr)
        if node.param is not None:
            yield from selectors(node.param)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from selectors(node.lhs)
        yield from selectors(node.rhs)
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        yield from selectors(node.expr)


def parsed(query: str) -> Any:
    for variable in GRAFANA_DURATIONS:
        query = query.replace(variable, "5m")
    return promql_parser.parse(query)


def findings(query: str) -> list[str]:
    """What is wrong with a query that reads values (a panel's or an alert's expression)."""
    try:
        tree = parsed(query)
    except ValueError as exc:
        return [f"does not parse ({exc}): {query}"]
    found = []
    for name, function in selectors(tree):
        kind = None if name is None else series_kind(name)
        if kind is None:
            found.append(f"{name or 'a selector without a name'} is not an exported metric")
        elif kind == "histogram":
            found.append(f"{name} is a histogram: query its _bucket, _sum or _count")
        elif kind == "counter" and function not in COUNTER_FUNCTIONS:
            found.append(f"{name} is a counter: read it through rate(), irate() or increase()")
        elif kind == "gauge" and function in COUNTER_FUNCTIONS:
            found.append(f"{name} is a gauge: {function}() is for counters")
    return found


def label_lookup_findings(query: str) -> list[str]:
    """What is wrong with a Grafana `label_values(selector, label)` variable query: only
    names matter there, since no value is read."""
    match = LABEL_VALUES.fullmatch(query.strip())
    if match is None:
        return [f"not a label_values(selector, label) query: {query}"]
    try:
        tree = parsed(match["selector"])
    except ValueError as exc:
        return [f"does not parse ({exc}): {query}"]
    return [
        f"{name} is not an exported metric"
        for name, _ in selectors(tree)
        if name is None or series_kind(name) not in ("counter", "gauge")
    ]
