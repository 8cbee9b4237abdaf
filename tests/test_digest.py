"""``benchmark.core.digest.sha256_file``: the digest of the file's bytes, whatever their size and
whether the path is a ``str`` or a ``Path`` (the harness names checkpoints, embedding files and
cached frames by it)."""

from __future__ import annotations

import hashlib

import pytest

from benchmark.core.digest import sha256_file


@pytest.mark.parametrize("size", [0, 1, (1 << 18) + 7, 3 << 20])
def test_sha256_file_is_the_digest_of_the_bytes(tmp_path, size):
    data = bytes((i * 131 + 7) % 256 for i in range(size))
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_a_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "absent")
