"""simq.celery.upstream: extracting and editing the sdist's files, and the gate's comparison (no network).

The full run of Celery's suite is in .ci/run (``python -m simq.celery.upstream --mode sim``): it fetches
the sdist and takes minutes, which the unit suite should not.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from simq.celery import upstream
from simq.celery.expected import expected_failures


def _sdist(path: Path, files: dict[str, str]) -> Path:
    target = path / f"celery-{upstream.VERSION}.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"celery-{upstream.VERSION}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def _files() -> dict[str, str]:
    files = {name: "" for name in upstream.FILES}
    for name, text, _, _ in upstream.EDITS:
        files[name] += f"# before\n{text}# after\n"
    return files


class TestPrepare:
    def test_extracts_the_files_and_applies_each_edit(self, tmp_path: Path) -> None:
        sdist = _sdist(tmp_path, _files())
        into = tmp_path / "run"
        into.mkdir()
        upstream.prepare(sdist, into)
        for name, text, replacement, _ in upstream.EDITS:
            assert (into / name).read_text() == f"# before\n{replacement}# after\n"
        assert "python_classes = test_*" in (into / "pytest.ini").read_text()

    def test_an_edit_that_no_longer_applies_stops_the_run(self, tmp_path: Path) -> None:
        files = _files()
        files[upstream.EDITS[0][0]] = "# upstream changed\n"
        sdist = _sdist(tmp_path, files)
        with pytest.raises(RuntimeError, match="no longer applies"):
            upstream.prepare(sdist, tmp_path)

    def test_a_cached_sdist_is_reused(self, tmp_path: Path) -> None:
        sdist = _sdist(tmp_path, _files())
        assert upstream.fetch_sdist(tmp_path) == sdist


class TestGate:
    def test_an_unlisted_failure_and_a_listed_pass_both_fail_the_gate(self) -> None:
        expected = {"a": "reason", "b": "reason"}
        outcomes = {
            "a": {"outcome": "failed", "detail": ""},
            "b": {"outcome": "passed", "detail": ""},
            "c": {"outcome": "error", "detail": ""},
        }
        assert upstream.compare(outcomes, expected) == (["c"], ["b"])

    def test_every_expected_failure_has_a_reason_of_a_known_kind(self) -> None:
        for name, reason in expected_failures("sim").items():
            assert name.startswith("t/integration/test_canvas.py::")
            assert reason.split(":")[0] in ("canvas", "divergence", "internals", "layer"), name
