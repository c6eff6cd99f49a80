"""The gateway's Prometheus metrics: values, exposition, bounded labels (issue 6, point 8)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bastion.serving._metrics import LATENCY_BUCKETS, GatewayMetrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: GatewayMetrics) -> Samples:
    body, content_type = metrics.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(("bastion_gateway_" + name, frozenset(labels.items())))


def test_served_counts_requests_by_code_and_observes_latency() -> None:
    metrics = GatewayMetrics()
    metrics.served("iris", "3", 0.0004, 200)
    metrics.served("iris", "3", 0.0004, 200)
    metrics.served("iris", "3", 0.02, 500)
    metrics.served("iris", "2", 3.0, 200)
    samples = scrape(metrics)
    assert value(samples, "requests_total", deployment="iris", version="3", code="200") == 2
    assert value(samples, "requests_total", deployment="iris", version="3", code="500") == 1
    assert value(samples, "requests_total", deployment="iris", version="2", code="200") == 1
    pair = {"deployment": "iris", "version": "3"}
    histogram = "request_duration_seconds"
    assert value(samples, histogram + "_count", **pair) == 3
    assert value(samples, histogram + "_sum", **pair) == pytest.approx(0.0208)
    assert value(samples, histogram + "_bucket", le="0.00025", **pair) == 0
    assert value(samples, histogram + "_bucket", le="0.0005", **pair) == 2
    assert value(samples, histogram + "_bucket", le="0.025", **pair) == 3
    assert value(samples, histogram + "_bucket", le="+Inf", **pair) == 3
    assert value(samples, histogram + "_bucket", le="2.5", deployment="iris", version="2") == 0
    assert value(samples, histogram + "_bucket", le="5.0", deployment="iris", version="2") == 1


def test_histogram_buckets_span_sub_millisecond_to_ten_seconds() -> None:
    assert LATENCY_BUCKETS[0] == 0.0001
    assert LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)
    assert sum(bound < 0.001 for bound in LATENCY_BUCKETS) >= 3


def test_a_latency_on_a_bucket_bound_falls_in_that_bucket() -> None:
    metrics = GatewayMetrics()
    metrics.served("m", "1", 0.001, 200)
    samples = scrape(metrics)
    bucket = "request_duration_seconds_bucket"
    assert value(samples, bucket, deployment="m", version="1", le="0.001") == 1
    assert value(samples, bucket, deployment="m", version="1", le="0.0005") == 0


def test_negative_or_nan_latency_counts_as_zero() -> None:
    metrics = GatewayMetrics()
    metrics.served("m", "1", -1.0, 200)
    metrics.served("m", "1", float("nan"), 200)
    samples = scrape(metrics)
    assert value(samples, "request_duration_seconds_sum", deployment="m", version="1") == 0
    bucket = "request_duration_seconds_bucket"
    assert value(samples, bucket, deployment="m", version="1", le="0.0001") == 2


def test_rejections_keep_error_codes_and_fold_anything_else_into_other() -> None:
    metrics = GatewayMetrics()
    for reason in ("bad_input", "forbidden", "rate_limited", "model_unavailable", "not_found"):
        metrics.rejected("iris", reason)
    metrics.rejected("iris", "bad_input")
    metrics.rejected("iris", "made-up reason")
    metrics.rejected("iris", "another one")
    samples = scrape(metrics)
    assert value(samples, "rejections_total", deployment="iris", reason="bad_input") == 2
    assert value(samples, "rejections_total", deployment="iris", reason="not_found") == 1
    assert value(samples, "rejections_total", deployment="iris", reason="other") == 2
    assert value(samples, "rejections_total", deployment="iris", reason="made-up reason") is None


def test_rate_limit_hits_with_and_without_a_deployment() -> None:
    metrics = GatewayMetrics()
    metrics.rate_limited("iris")
    metrics.rate_limited("iris")
    metrics.rate_limited(None)
    samples = scrape(metrics)
    assert value(samples, "rate_limited_total", deployment="iris") == 2
    assert value(samples, "rate_limited_total", deployment="") == 1  # not tied to one


def test_worker_restarts_and_the_workers_up_gauge() -> None:
    metrics = GatewayMetrics()
    metrics.worker_restarted("iris", "3", "crashed")
    metrics.worker_restarted("iris", "3", "hung")
    metrics.worker_restarted("iris", "3", "hung")
    metrics.worker_restarted("iris", "3", "bored")
    metrics.set_workers_up("iris", "3", True)
    metrics.set_workers_up("iris", "2", True)
    metrics.set_workers_up("iris", "2", False)
    samples = scrape(metrics)
    restarts = "worker_restarts_total"
    assert value(samples, restarts, deployment="iris", version="3", reason="crashed") == 1
    assert value(samples, restarts, deployment="iris", version="3", reason="hung") == 2
    assert value(samples, restarts, deployment="iris", version="3", reason="other") == 1
    assert value(samples, "workers_up", deployment="iris", version="3") == 1
    assert value(samples, "workers_up", deployment="iris", version="2") == 0


def test_routing_arms_and_rollbacks() -> None:
    metrics = GatewayMetrics()
    metrics.routed("iris", "3", "stable")
    metrics.routed("iris", "4", "candidate")
    metrics.routed("iris", "4", "shadow")
    metrics.routed("iris", "4", "sideways")
    metrics.rollback("iris", "auto")
    metrics.rollback("iris", "yank")
    metrics.rollback("iris", "manual")
    metrics.rollback("iris", "whim")
    samples = scrape(metrics)
    assert value(samples, "routed_total", deployment="iris", version="3", arm="stable") == 1
    assert value(samples, "routed_total", deployment="iris", version="4", arm="candidate") == 1
    assert value(samples, "routed_total", deployment="iris", version="4", arm="shadow") == 1
    assert value(samples, "routed_total", deployment="iris", version="4", arm="other") == 1
    for reason in ("auto", "yank", "manual", "other"):
        assert value(samples, "rollbacks_total", deployment="iris", reason=reason) == 1


def test_every_family_is_exposed_with_its_type_before_anything_is_recorded() -> None:
    body, _ = GatewayMetrics().render()
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    prefix = "bastion_gateway_"
    assert families == {
        prefix + "requests": "counter",
        prefix + "request_duration_seconds": "histogram",
        prefix + "rejections": "counter",
        prefix + "rate_limited": "counter",
        prefix + "worker_restarts": "counter",
        prefix + "workers_up": "gauge",
        prefix + "routed": "counter",
        prefix + "rollbacks": "counter",
    }


def test_deployment_version_pairs_are_capped_at_a_thousand() -> None:
    metrics = GatewayMetrics()
    for index in range(1005):
        metrics.served("model", str(index), 0.001, 200)
    metrics.served("model", "0", 0.001, 200)  # an admitted pair keeps its own labels
    metrics.rejected("late", "bad_input")
    samples = scrape(metrics)
    assert value(samples, "requests_total", deployment="model", version="0", code="200") == 2
    assert value(samples, "requests_total", deployment="model", version="999", code="200") == 1
    assert value(samples, "requests_total", deployment="model", version="1000", code="200") is None
    assert value(samples, "requests_total", deployment="other", version="other", code="200") == 5
    assert value(samples, "rejections_total", deployment="other", reason="bad_input") == 1
    series = [key for key in samples if key[0] == "bastion_gateway_requests_total"]
    assert len(series) == 1001


def test_unusable_label_values_and_statuses_become_other() -> None:
    metrics = GatewayMetrics(max_pairs=10)
    metrics.served("x" * 500, "1", 0.001, 200)
    metrics.served("bad\nname", "1", 0.001, 200)
    metrics.served("ok", "1", 0.001, 1234)
    samples = scrape(metrics)
    assert value(samples, "requests_total", deployment="other", version="other", code="200") == 2
    assert value(samples, "requests_total", deployment="ok", version="1", code="other") == 1


def test_each_instance_has_its_own_registry() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.served("iris", "1", 0.001, 200)
    assert (
        value(scrape(second), "requests_total", deployment="iris", version="1", code="200") is None
    )
    assert REGISTRY.get_sample_value("bastion_gateway_requests_total") is None


def test_concurrent_recording_loses_no_counts() -> None:
    metrics = GatewayMetrics()

    def hammer() -> None:
        for _ in range(5000):
            metrics.served("iris", "1", 0.0003, 200)
            metrics.routed("iris", "1", "stable")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = scrape(metrics)
    assert value(samples, "requests_total", deployment="iris", version="1", code="200") == 20000
    assert value(samples, "routed_total", deployment="iris", version="1", arm="stable") == 20000
    bucket = "request_duration_seconds_bucket"
    assert value(samples, bucket, deployment="iris", version="1", le="0.0005") == 20000


@settings(max_examples=60, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.text(max_size=40), st.text(max_size=20), st.integers(0, 700)),
        min_size=1,
        max_size=20,
    )
)
def test_any_label_text_renders_a_parseable_exposition(calls: list[tuple[str, str, int]]) -> None:
    metrics = GatewayMetrics(max_pairs=5)
    for deployment, version, status in calls:
        metrics.served(deployment, version, 0.001, status)
        metrics.rejected(deployment, version)
    samples = scrape(metrics)
    answered = [v for (name, _), v in samples.items() if name.endswith("requests_total")]
    refused = [v for (name, _), v in samples.items() if name.endswith("rejections_total")]
    assert sum(answered) == len(calls)
    assert sum(refused) == len(calls)
