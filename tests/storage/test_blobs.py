import pytest

from batchrec_dagster.storage.blobs import BlobExistsError, BlobNotFoundError, sha256_hex


@pytest.fixture(params=["local", "gcs"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


def test_write_once_round_trip(store):
    stored = store.put_new("recvae_0.1_a.pt", b"weights")
    assert stored.sha256 == sha256_hex(b"weights") and stored.size_bytes == 7
    assert store.exists("recvae_0.1_a.pt")
    assert store.read("recvae_0.1_a.pt") == b"weights"
    with pytest.raises(BlobExistsError):
        store.put_new("recvae_0.1_a.pt", b"other")
    assert store.read("recvae_0.1_a.pt") == b"weights"


def test_put_replaces_and_leaves_no_partial_file(store):
    """`put` (asset values, which a retried step writes again) replaces; `put_new` never does."""
    first = store.put("assets/raw/2026-03-01-20:00/run.npz", b"one")
    again = store.put("assets/raw/2026-03-01-20:00/run.npz", b"second")
    assert (first.uri, again.size_bytes, again.sha256) == (again.uri, 6, sha256_hex(b"second"))
    assert store.read("assets/raw/2026-03-01-20:00/run.npz") == b"second"
    assert [b.name for b in store.list_blobs()] == ["assets/raw/2026-03-01-20:00/run.npz"]
    with pytest.raises(BlobExistsError):
        store.put_new("assets/raw/2026-03-01-20:00/run.npz", b"three")


def test_missing_blob(store):
    assert not store.exists("nope.pt")
    with pytest.raises(BlobNotFoundError):
        store.read("nope.pt")


def test_local_names_cannot_escape(local_store):
    with pytest.raises(ValueError, match="escapes"):
        local_store.put_new("../outside.pt", b"x")


@pytest.mark.parametrize("name", ["../outside.pt", "models/../../etc/passwd", "/etc/passwd", "a//b.pt",
                                  "./a.pt", "a/.", "", "a\nb.pt", "a\x00b.pt"])
def test_names_that_are_not_plain_relative_paths_are_refused_by_every_store(store, name):
    # before any I/O: against the GCS emulator, a `..` name got no answer and the client retried
    # for its 2-minute deadline
    for call in (store.read, store.exists, store.delete, lambda n: store.put_new(n, b"x")):
        with pytest.raises(ValueError, match="escapes the store or is not a plain relative path"):
            call(name)


def test_nested_plain_names_still_work(store):
    stored = store.put_new("models/2026/recvae_0.1_b.pt", b"w")
    assert store.read("models/2026/recvae_0.1_b.pt") == b"w" and stored.name == "models/2026/recvae_0.1_b.pt"
