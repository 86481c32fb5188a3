"""Access over real HTTP: API keys (hashed in settings), the per-key rate limit (429 + Retry-After),
CORS for the extension's and web origins, and the bind rule of `batchrec serve`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batchrec_dagster.serving.api.access import AccessPolicy, TokenBuckets, check_bind, new_api_key
from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.model.manager import ModelManager
from batchrec_dagster.settings import PROJECT_ROOT, SettingsError, load_settings
from tests.harness.asgi import in_process
from tests.harness.servers import free_port
from tests.harness.serving import publish

EXTENSION = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
WEB = "https://recs.example.org"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def guarded(mongo_db, gcs_store, tmp_path: Path) -> Iterator[httpx.Client]:
    """A served model behind two keys (rate 1/s, burst 3 each) and CORS for two origins."""
    publish(mongo_db, gcs_store, score=0.3)
    manager = ModelManager(mongo_db, gcs_store, poll_seconds=None)
    assert manager.refresh_now().outcome == "swapped"
    settings = load_settings({"BATCHREC_API_KEYS": f"extension:{sha('ext-secret')}, web:{sha('web-secret')}",
                              "BATCHREC_API_RATE_LIMIT": "1", "BATCHREC_API_RATE_BURST": "3",
                              "BATCHREC_CORS_ORIGINS": f"{EXTENSION}, {WEB}"})
    access = AccessPolicy(settings.api_key_hashes, settings.api_rate_limit, settings.api_rate_burst,
                          buckets_path=tmp_path / "buckets")
    app = create_app(manager, mongo_db, access=access, cors_origins=settings.cors_origin_list)
    with in_process(app) as http:
        yield http


def recommend(http: httpx.Client, **headers: str) -> httpx.Response:
    return http.post("/recommendations", json={"repo_ids": [1000], "k": 3}, headers=headers)


def test_keys_are_required_except_for_probes_page_and_docs(guarded: httpx.Client) -> None:
    for response in (recommend(guarded), recommend(guarded, **{"x-api-key": "ext-secretX"}),
                     recommend(guarded, **{"x-api-key": sha("ext-secret")}),  # the hash is not the key
                     guarded.get("/model"), guarded.get("/metrics"), guarded.get("/users/x/recommendations")):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
        assert "API key" in response.json()["detail"]
    assert recommend(guarded, **{"x-api-key": "ext-secret"}).status_code == 200
    assert recommend(guarded, authorization="Bearer web-secret").status_code == 200
    for path in ("/healthz", "/readyz", "/", "/docs", "/openapi.json", "/docs/swagger-ui-bundle.js",
                 "/docs/swagger-ui.css"):
        assert guarded.get(path).status_code == 200, path


def test_rate_limit_per_key_answers_429_with_retry_after(guarded: httpx.Client) -> None:
    statuses = [recommend(guarded, **{"x-api-key": "ext-secret"}).status_code for _ in range(5)]
    # a burst of 3, then (at 1 request per second) refused; a few ms pass, far from a new token
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    refused = recommend(guarded, **{"x-api-key": "ext-secret"})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "rate limit of key 'extension'" in refused.json()["detail"]
    # the other key has its own bucket
    assert recommend(guarded, **{"x-api-key": "web-secret"}).status_code == 200
    metrics = guarded.get("/metrics", headers={"x-api-key": "web-secret"}).text
    assert 'batchrec_http_refused_total{reason="rate_limited"} 3.0' in metrics


def test_cors_for_the_extension_and_web_origins(guarded: httpx.Client) -> None:
    for origin in (EXTENSION, WEB):
        preflight = guarded.options("/recommendations", headers={
            "origin": origin, "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-api-key"})
        assert preflight.status_code == 200  # answered without a key: browsers send none here
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        answer = recommend(guarded, origin=origin, **{"x-api-key": "web-secret"})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
    # refusals carry CORS headers too, so that the extension can read why
    refused = recommend(guarded, origin=EXTENSION)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == EXTENSION
    assert "retry-after" in refused.headers["access-control-expose-headers"].lower()
    # another origin gets no CORS grant (the browser blocks it)
    other = "chrome-extension://ppppppppppppppppppppppppppppppppp"
    preflight = guarded.options("/recommendations", headers={
        "origin": other, "access-control-request-method": "POST"})
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
    answer = recommend(guarded, origin=other, **{"x-api-key": "web-secret"})
    assert "access-control-allow-origin" not in answer.headers


def test_without_keys_or_origins_nothing_changes(serving) -> None:
    serving.publish(score=0.3)
    serving.manager.refresh_now()
    response = serving.http.post("/recommendations", json={"repo_ids": [1000]},
                                 headers={"origin": EXTENSION})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_settings_hold_hashes_never_keys() -> None:
    key, entry = new_api_key("extension")
    settings = load_settings({"BATCHREC_API_KEYS": entry})
    assert settings.api_key_hashes == {sha(key): "extension"} and key not in repr(settings)
    assert AccessPolicy(settings.api_key_hashes).key_name([(b"x-api-key", key.encode())]) == "extension"
    for bad in (key, "extension:" + key, f"a:{sha('x')},a:{sha('y')}", "x:" + "g" * 64):
        with pytest.raises(SettingsError, match="BATCHREC_API_KEYS") as error:
            load_settings({"BATCHREC_API_KEYS": bad})
        assert key not in str(error.value)  # a key pasted by mistake is not echoed into logs
    for bad in ("*", "https://x.org/", "chrome-extension://", "ftp://x.org", "https://x.org/path"):
        with pytest.raises(SettingsError, match="BATCHREC_CORS_ORIGINS"):
            load_settings({"BATCHREC_CORS_ORIGINS": bad})


def test_token_buckets_are_shared_through_their_file(tmp_path: Path) -> None:
    """Two maps of one file (as two worker processes hold) draw from the same buckets."""
    first, second = (TokenBuckets(2, rate=0.001, burst=4, path=tmp_path / "b") for _ in range(2))
    taken = [first.take(0) == 0.0, second.take(0) == 0.0, first.take(0) == 0.0, second.take(0) == 0.0]
    assert taken == [True] * 4
    assert first.take(0) > 0 and second.take(0) > 0 and second.take(1) == 0.0
    first.close()
    second.close()


@pytest.mark.parametrize("host,keys,allow,refused", [
    ("127.0.0.1", False, False, False), ("::1", False, False, False), ("localhost", False, False, False),
    ("0.0.0.0", False, False, True), ("10.1.2.3", False, False, True), ("example.org", False, False, True),
    ("0.0.0.0", True, False, False), ("0.0.0.0", False, True, False)])
def test_the_bind_rule(host: str, keys: bool, allow: bool, refused: bool) -> None:
    assert (check_bind(host, keys, allow) is not None) == refused


def test_serve_refuses_a_public_interface_without_keys(tmp_path: Path) -> None:
    env = {**os.environ, "BATCHREC_HOME": str(tmp_path)}
    env.pop("BATCHREC_API_KEYS", None)
    out = subprocess.run([sys.executable, "-m", "batchrec_dagster.serving.process.command", "serve", "--host",
                          "0.0.0.0", "--port", str(free_port())], capture_output=True, text=True, env=env,
                         cwd=PROJECT_ROOT, timeout=120)
    assert out.returncode == 2
    assert "refusing to listen on '0.0.0.0' without API keys" in out.stderr
    assert not (tmp_path / "mongo").exists()  # refused before starting anything
