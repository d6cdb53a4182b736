"""The fetcher's Prometheus metrics are counted per batch: the same samples as per tracker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from adapters.prometheus import observe_many


def _samples(h: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in h.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observing_n_at_once_gives_the_samples_of_n_observations() -> None:
    buckets = (1, 2, 4, 8, 16, 32)
    one = Histogram("one", "one by one", buckets=buckets, registry=CollectorRegistry())
    many = Histogram("many", "n at once", buckets=buckets, registry=CollectorRegistry())
    for value, n in [(1, 40), (4, 3), (16, 7), (64, 2), (2, 0)]:
        for _ in range(n):
            one.observe(value)
        observe_many(many, value, n)
    assert {k[1:]: v for k, v in _samples(one).items()} == {
        k[1:]: v for k, v in _samples(many).items()
    }
    assert _samples(many)[("many_count", "")] == 52
