"""Every test gets its own response cache and trajectory store.

The embedded model's weights stay in the shared model folder (GPO_MODEL_DIR
or ~/.cache/gpo/models), so they are assembled once, not per test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    cache = tmp_path_factory.mktemp("gpo-cache")
    monkeypatch.setenv("GPO_CACHE_DIR", str(cache))
    # A developer's own shared cache must never reach the tests.
    monkeypatch.delenv("GPO_CACHE_URL", raising=False)
    monkeypatch.delenv("GPO_CACHE_TTL", raising=False)
    return cache


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OpenAI key for litellm to send (the test model server ignores it). A file whose
    tests all call a model takes it with `pytestmark = pytest.mark.usefixtures("api_key")`;
    it is not autouse, so the tests of a missing key see the environment as it is."""
    monkeypatch.setenv("OPENAI_API_KEY", "test")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh folder under /tmp with a short path: a daemon's Unix socket inside it
    must fit in sun_path (108 bytes), which pytest's tmp_path can exceed."""
    base = Path(tempfile.mkdtemp(prefix="gpo", dir="/tmp"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
