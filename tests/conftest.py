"""Shared fixtures: the test photos live outside the repo, in ../shared/testdata (never copied in)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTDATA = (REPO_ROOT / ".." / "shared" / "testdata").resolve()


def testdata_path(*parts: str) -> Path:
    path = TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"test data missing: {path} (the tests read the shared photos from ../shared/testdata "
            "beside the repository; they are never copied into it)"
        )
    return path


@pytest.fixture(scope="session")
def testdata() -> Path:
    return testdata_path()
