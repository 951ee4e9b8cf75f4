"""Celery 5.6.2's own canvas integration tests, run against simq through the layer: a CI gate.

``python -m simq.celery.upstream --mode sim`` downloads the celery 5.6.2 sdist
(``pip download --no-deps --no-binary :all: celery==5.6.2``) into a cache
directory (reused when present), extracts ``t/integration/test_canvas.py``,
its ``tasks.py`` and ``conftest.py`` into a temporary directory, applies the
edits in ``EDITS`` (each justified in docs/celery.md), and runs pytest on them
with ``-p simq.celery``. Nothing of Celery's is kept in simq's tree.

It writes every test's outcome to ``--output``, prints the counts, and exits
non-zero when a test fails that ``simq.celery.expected`` does not list, or a
listed test passes (take it off the list: the list only shrinks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from simq.celery.expected import expected_failures

__all__ = ["EDITS", "FILES", "VERSION", "fetch_sdist", "main", "prepare"]

VERSION = "5.6.2"
FILES = (
    "t/__init__.py",
    "t/integration/__init__.py",
    "t/integration/conftest.py",
    "t/integration/tasks.py",
    "t/integration/test_canvas.py",
)

#: (file, text, replacement, reason): applied at test time; each is listed in docs/celery.md.
EDITS: tuple[tuple[str, str, str, str], ...] = (
    (
        "t/integration/conftest.py",
        "        'result_extended': True,\n",
        "",
        "simq refuses result_extended (its records keep no args/kwargs), and the suite's celery_config sets it",
    ),
)

# upstream's own pytest settings (its pyproject.toml), and the flaky mark registered without its plugin
PYTEST_INI = """[pytest]
addopts = --strict-markers
python_classes = test_*
xfail_strict = true
markers =
    flaky(reruns, reruns_delay, cause): upstream's retry mark; runs once here (pytest-rerunfailures is not loaded)
"""


def default_cache() -> Path:
    root = os.environ.get("SIMQ_CELERY_SDIST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "simq", "celery-sdist"
    )
    return Path(root)


def fetch_sdist(cache: Path) -> Path:
    """The sdist in ``cache``, downloaded with pip if it is not there yet."""
    target = cache / f"celery-{VERSION}.tar.gz"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", f"celery=={VERSION}"]
    done = subprocess.run([*cmd, "-d", str(cache)], capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0 or not target.exists():
        raise RuntimeError(f"could not download the celery {VERSION} sdist ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    return target


def prepare(sdist: Path, into: Path) -> None:
    """Extract ``FILES`` from ``sdist`` into ``into`` and apply ``EDITS``."""
    prefix = f"celery-{VERSION}/"
    with tarfile.open(sdist) as tar:
        for name in FILES:
            member = tar.getmember(prefix + name)
            source = tar.extractfile(member)
            if source is None:
                raise RuntimeError(f"{name} is not a file in {sdist}")
            path = into / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(source.read())
    for name, text, replacement, reason in EDITS:
        path = into / name
        content = path.read_text(encoding="utf-8")
        if content.count(text) != 1:
            raise RuntimeError(f"upstream edit for {name} no longer applies ({reason}): {text!r} not found once")
        path.write_text(content.replace(text, replacement), encoding="utf-8")
    (into / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")


def _pytest_args(args: argparse.Namespace) -> list[str]:
    cmd = ["-p", "simq.celery", "-p", "simq.celery.record", "-p", "no:rerunfailures", "-p", "no:randomly"]
    cmd += ["-p", "no:cacheprovider", "--simq-celery-mode", args.mode, "--timeout", str(args.timeout)]
    if args.seed is not None:
        cmd += ["--simq-seed", str(args.seed)]
    if args.mode == "deployed":
        cmd += ["--simq-celery-broker", args.broker, "--simq-celery-backend", args.backend or args.broker]
        cmd += ["--simq-celery-pool", args.pool, "--simq-celery-concurrency", str(args.concurrency)]
    return [*cmd, "-q", "-rN", "t/integration/test_canvas.py", *args.pytest_args]


def mode_key(args: argparse.Namespace) -> str:
    return args.mode if args.mode != "deployed" else f"deployed-{args.pool}"


def compare(outcomes: dict[str, dict[str, str]], expected: dict[str, str]) -> tuple[list[str], list[str]]:
    """(failures not on the list, listed tests that did not fail)."""
    failed = {n for n, o in outcomes.items() if o["outcome"] in ("failed", "error")}
    unexpected = sorted(failed - set(expected))
    fixed = sorted(n for n in expected if n in outcomes and n not in failed)
    return unexpected, fixed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simq.celery.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("sim", "eager", "deployed"), default="sim")
    parser.add_argument("--seed", type=int, default=None, help="sim mode: the simulation seed (default 0)")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0", help="deployed mode: broker URL")
    parser.add_argument("--backend", default=None, help="deployed mode: result backend URL (default: the broker)")
    parser.add_argument("--pool", choices=("threads", "processes", "solo"), default="threads")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="pytest-timeout per test (caps upstream's), seconds"
    )
    parser.add_argument("--cache", type=Path, default=None, help="where the sdist is kept (reused when present)")
    parser.add_argument("--output", type=Path, default=None, help="per-test outcomes (default: in the cache dir)")
    parser.add_argument("--no-gate", action="store_true", help="report only; do not compare with the expected list")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    cache = args.cache or default_cache()
    sdist = fetch_sdist(cache)
    output = args.output or cache / f"upstream-{mode_key(args)}.txt"
    with tempfile.TemporaryDirectory(prefix="simq-celery-upstream-") as tmp:
        root = Path(tmp)
        prepare(sdist, root)
        raw = root / "outcomes.json"
        env = dict(os.environ, SIMQ_CELERY_OUTCOMES=str(raw), PYTHONPATH=str(root))
        env["SIMQ_CELERY_TIMEOUT_CAP"] = str(args.timeout)
        env.setdefault("REDIS_HOST", "127.0.0.1")  # the suite's side channel (tasks.get_redis_connection)
        env.setdefault("TEST_BACKEND", "redis://")
        cmd = [sys.executable, "-m", "pytest", *_pytest_args(args)]
        print("simq.celery.upstream:", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=root, env=env, check=False)  # noqa: S603 - our own argv
        if not raw.exists():
            print("simq.celery.upstream: pytest wrote no outcomes (it did not start)", file=sys.stderr)
            return 2
        data = json.loads(raw.read_text(encoding="utf-8"))
    outcomes: dict[str, dict[str, str]] = data["outcomes"]
    counts = Counter(o["outcome"] for o in outcomes.values())
    lines = [f"{o['outcome']:8} {n}  {o['detail']}".rstrip() for n, o in sorted(outcomes.items())]
    summary = (
        f"celery {VERSION} t/integration/test_canvas.py, mode {mode_key(args)}: collected {len(data['collected'])}, "
        f"passed {counts['passed']}, failed {counts['failed'] + counts['error']}, skipped {counts['skipped']}, "
        f"xfailed {counts['xfailed']}, xpassed {counts['xpassed']}"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join([summary, *lines]) + "\n", encoding="utf-8")
    print(f"simq.celery.upstream: per-test outcomes in {output}")
    print(summary)
    if args.no_gate or args.mode != "sim":
        print("simq.celery.upstream: report only (the expected-failure list gates sim mode)")
        return 0
    unexpected, fixed = compare(outcomes, expected_failures(mode_key(args)))
    for name in unexpected:
        print(f"UNEXPECTED FAILURE {name}: {outcomes[name]['detail']}")
    for name in fixed:
        print(f"NOW PASSES (take it off simq/celery/expected.py): {name}")
    return 1 if unexpected or fixed else 0


if __name__ == "__main__":
    sys.exit(main())
