"""Every test gets its own response cache and trajectory store.

The embedded model's weights stay in the shared model folder (GPO_MODEL_DIR
or ~/.cache/gpo/models), so they are assembled once, not per test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    cache = tmp_path_factory.mktemp("gpo-cache")
    monkeypatch.setenv("GPO_CACHE_DIR", str(cache))
    return cache
