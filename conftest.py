"""Docs are code: every ```python block in README.md and docs/*.md runs as a test (sybil).

Blocks in one file share a namespace and run in order, like a notebook; a
block that should not run is preceded by ``<!-- skip: next -->``.
"""

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["README.md", "docs/*.md"],
).pytest()
