import pytest

from batchrec_dagster.storage import BlobExistsError, BlobNotFoundError, sha256_hex


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


def test_missing_blob(store):
    assert not store.exists("nope.pt")
    with pytest.raises(BlobNotFoundError):
        store.read("nope.pt")


def test_local_names_cannot_escape(local_store):
    with pytest.raises(ValueError, match="escapes"):
        local_store.put_new("../outside.pt", b"x")
