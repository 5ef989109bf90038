"""spikeline.atomic: the one write path of caches, checkpoints, exports and reports."""
import pytest

from spikeline.atomic import atomic_file, atomic_path


def test_success_replaces_and_is_readable(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with atomic_file(target, fsync=True) as fh:
        fh.write(b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.nir"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nir"]
