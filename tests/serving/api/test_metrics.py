"""`GET /metrics` in the Prometheus text format, read with prometheus-client's own parser: requests by
route and status, latency histograms, micro-batch sizes, the served model, swaps, failed swaps,
poll errors and the registry's reachability. (Across worker processes: test_workers.py.)"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.serving import Serving, build_artifact, tamper


def scrape(serving: Serving) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = serving.http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_batches_models_and_failures(serving: Serving) -> None:
    before = scrape(serving)
    assert value(before, "batchrec_ready") == 0.0
    first = serving.publish(score=0.25, seed=1)
    serving.manager.refresh_now()
    for _ in range(7):
        assert serving.recommend([1000, 1001]).status_code == 200
    for _ in range(2):
        assert serving.http.post("/recommendations", json={"repo_ids": ["x"]}).status_code == 422
    assert serving.http.get("/users/nobody/recommendations").status_code == 404
    serving.publish(score=0.5, data=tamper(build_artifact(2)))  # fails to load: counted
    serving.manager.refresh_now()

    after = scrape(serving)
    route = "/recommendations"
    assert value(after, "batchrec_http_requests_total", route=route, status="200") == 7
    assert value(after, "batchrec_http_requests_total", route=route, status="422") == 2
    assert value(after, "batchrec_http_requests_total", route="/users/{login}/recommendations",
                 status="404") == 1
    assert value(after, "batchrec_http_request_duration_seconds_count", route=route) == 9
    assert value(after, "batchrec_http_request_duration_seconds_bucket", route=route, le="+Inf") == 9
    assert 0 < value(after, "batchrec_http_request_duration_seconds_sum", route=route) < 9 * 5.0
    # 7 answered requests, one user each, in however many forward passes
    assert value(after, "batchrec_inference_batch_size_sum") == 7
    assert 1 <= value(after, "batchrec_inference_batch_size_count") <= 7
    assert value(after, "batchrec_served_model_info", model_id=str(first["_id"]), run_id=first["run_id"],
                 partition_key=first["partition_key"]) == 1
    assert value(after, "batchrec_served_model_score") == 0.25
    age = value(after, "batchrec_served_model_age_seconds")
    assert 0 <= age < 2 * 3600  # trained on data that ended within the last hour or two
    assert value(after, "batchrec_served_model_data_end_timestamp_seconds") == first["data_end"].timestamp()
    assert value(after, "batchrec_model_swaps_total") == 1
    assert value(after, "batchrec_model_swap_failures_total") == 1
    assert value(after, "batchrec_registry_up") == 1 and value(after, "batchrec_ready") == 1
    assert value(after, "batchrec_registry_poll_errors_total") == 0


def test_a_swap_moves_the_served_model_series(serving: Serving) -> None:
    first = serving.publish(score=0.2, seed=1)
    serving.manager.refresh_now()
    second = serving.publish(score=0.3, seed=2)
    serving.manager.refresh_now()
    samples = scrape(serving)
    served = {dict(labels)["model_id"]: v for (name, labels), v in samples.items()
              if name == "batchrec_served_model_info"}
    assert served == {str(second["_id"]): 1.0}  # in one process the old series is removed
    assert str(first["_id"]) not in served and value(samples, "batchrec_model_swaps_total") == 2
