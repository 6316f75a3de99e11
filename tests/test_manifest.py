"""Manifest parsing, validation, writing and pack."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelload import Manifest, ManifestError, pack
from modelload.manifest import merge_requirements

GOOD = b"""
[model]
name = "m"
version = "1"
format = "joblib"
path = "model.joblib"

[requires]
python = ">=3.10"
packages = ["numpy>=1"]

[files."model.joblib"]
sha256 = "%s"
size = 3
""" % (b"a" * 64)


def test_parse_good_manifest_and_digest_is_sha256_of_bytes() -> None:
    m = Manifest.parse(GOOD, "x/modelload.toml")
    assert (m.name, m.version, m.format, m.path) == ("m", "1", "joblib", "model.joblib")
    assert m.requires.python == ">=3.10"
    assert m.requires.packages == ("numpy>=1",)
    assert m.files["model.joblib"].size == 3
    assert m.digest == hashlib.sha256(GOOD).hexdigest()


@pytest.mark.parametrize(
    ("mutation", "needle"),
    [
        (lambda s: s.replace(b"[model]", b"[modl]"), "missing required table [model]"),
        (lambda s: s.replace(b'version = "1"', b"version = 1.0"), "quote it"),
        (lambda s: s.replace(b'name = "m"\n', b""), "missing required key 'name'"),
        (lambda s: s.replace(b'"numpy>=1"', b'"numpy>>1"'), "not a PEP 508"),
        (lambda s: s.replace(b'">=3.10"', b'"3.10+"'), "not a version specifier"),
        (lambda s: s.replace(b"a" * 64, b"xyz"), "64 lowercase hex"),
        (lambda s: s.replace(b"size = 3", b"size = -1"), "non-negative"),
        (lambda s: s.replace(b'path = "model.joblib"', b'path = "../etc/passwd"'), "relative"),
        (lambda s: s.replace(b'path = "model.joblib"', b'path = "other.joblib"'), "not pinned"),
        (lambda s: s + b"\n[[[", "not valid TOML"),
    ],
)
def test_malformed_manifest_names_the_problem(mutation, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ManifestError) as info:
        Manifest.parse(mutation(GOOD), "bucket/m/modelload.toml")
    assert needle in str(info.value)
    assert "bucket/m/modelload.toml" in str(info.value)


def test_round_trip_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04N.")  # pickle of None
    (tmp_path / "extra" / "vocab.txt").parent.mkdir()
    (tmp_path / "extra" / "vocab.txt").write_text("a\nb\n")
    first = pack(tmp_path, name="n", version="2", requires=["numpy>=2,<3"])
    written = (tmp_path / "modelload.toml").read_bytes()
    assert first.raw == written
    second = pack(tmp_path, name="n", version="2", requires=["numpy>=2,<3"])
    assert second.digest == first.digest
    parsed = Manifest.parse(written)
    assert parsed.to_dict() == first.to_dict()
    assert set(parsed.files) == {"model.pkl", "extra/vocab.txt"}
    assert parsed.format == "pickle"


def test_pack_changes_digest_when_a_file_changes(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04N.")
    before = pack(tmp_path, name="n", version="1").digest
    (tmp_path / "notes.txt").write_text("x")
    assert pack(tmp_path, name="n", version="1").digest != before


def test_pack_needs_a_single_entry_or_entry_flag(tmp_path: Path) -> None:
    (tmp_path / "a.pkl").write_bytes(b"\x80\x04N.")
    (tmp_path / "b.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(ManifestError, match=r"a\.pkl, b\.pkl"):
        pack(tmp_path, name="n", version="1")
    m = pack(tmp_path, name="n", version="1", entry="b.pkl")
    assert m.path == "b.pkl"
    with pytest.raises(ManifestError, match="not found"):
        pack(tmp_path, name="n", version="1", entry="c.pkl")


def test_pack_rejects_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="empty"):
        pack(tmp_path, name="n", version="1")


def test_merge_requirements_overrides_by_canonical_name() -> None:
    merged = merge_requirements(
        ["numpy==2.4.6", "scikit-learn==1.9.1"], ["Scikit_Learn>=1.5", "pandas"]
    )
    assert merged == ["numpy==2.4.6", "pandas", "Scikit_Learn>=1.5"]
