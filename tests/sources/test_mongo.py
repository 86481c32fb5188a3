"""Every client's server selection is bounded; a bound set in the URI is the one used."""

from batchrec_dagster.sources.mongo import SERVER_SELECTION_TIMEOUT_MS, connect


def test_server_selection_is_bounded_and_the_uri_may_set_the_bound() -> None:
    default = connect("mongodb://127.0.0.1:1/?directConnection=true", connect=False)
    from_uri = connect("mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=1500",
                       connect=False)
    spelled = connect("mongodb://127.0.0.1:1/?serverselectiontimeoutms=2500", connect=False)
    explicit = connect("mongodb://127.0.0.1:1/", connect=False, serverSelectionTimeoutMS=500)
    try:
        assert default.options.server_selection_timeout == SERVER_SELECTION_TIMEOUT_MS / 1000
        assert from_uri.options.server_selection_timeout == 1.5
        assert spelled.options.server_selection_timeout == 2.5
        assert explicit.options.server_selection_timeout == 0.5
    finally:
        for client in (default, from_uri, spelled, explicit):
            client.close()
