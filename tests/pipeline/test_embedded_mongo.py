"""The embedded server started on demand: reuse by the same home, refusal of a foreign server."""

import pytest

from batchrec_dagster.embedded_mongo import (
    EmbeddedMongoError,
    ensure_embedded_mongo,
    is_serving,
    stop_embedded_mongo,
    wait_until_stopped,
)
from batchrec_dagster.mongo import connect
from tests.servers import free_port


def test_started_once_reused_and_foreign_homes_refused(tmp_path):
    port = free_port()
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    uri = ensure_embedded_mongo(home_a, port)
    try:
        client = connect(uri)
        client.batchrec.probe.insert_one({"home": "a"})
        assert ensure_embedded_mongo(home_a, port) == uri          # found running, not restarted
        assert client.batchrec.probe.count_documents({"home": "a"}) == 1
        with pytest.raises(EmbeddedMongoError, match="not the embedded MongoDB of"):
            ensure_embedded_mongo(home_b, port)
        client.close()
    finally:
        assert stop_embedded_mongo(home_a)
        wait_until_stopped(uri)
    assert not is_serving(uri)
