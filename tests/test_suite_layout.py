"""The test tree itself: what lets the whole suite collect in one run.

tox -e unit skips tests/privileged, so a clash between the two folders would
only show in the full (root) run: this check catches it as any user.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_file_basenames_are_unique() -> None:
    # Test folders are not packages: pytest imports each file by its basename.
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
