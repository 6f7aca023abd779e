"""The `gpo` settings object editors send, read into typed values.

Both editor clients send the same object, as initializationOptions and as the
answer to workspace/configuration for the section `gpo` (editors/vscode
src/settings.ts, editors/nvim lua/gpo/config.lua)::

    {"autoOptimizeOnSave": bool,
     "models": {"task": str | null, "optimizer": str | null},
     "daemon": {"address": str | null},
     "budget": {"initial"?: int, "final"?: int, "decay"?: "cosine" | "linear" | "fixed"}}

A bad value is left out with a warning naming it (the rest still applies):
settings come from a person's editor config, and one typo must not switch
the server off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LspSettings:
    auto_optimize_on_save: bool = False
    task_model: str | None = None
    optimizer_model: str | None = None
    daemon_address: str | None = None
    budget: tuple[tuple[str, int | str], ...] = field(default=())  # sorted (name, value) pairs

    def overrides(self) -> dict[str, Any]:
        """Per-job overrides for the daemon (its OVERRIDABLE names); unset ones left out."""
        out: dict[str, Any] = {}
        if self.task_model:
            out["model"] = self.task_model
        if self.optimizer_model:
            out["optimizer"] = self.optimizer_model
        if self.budget:
            out["budget"] = dict(self.budget)
        return out


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _section(data: Mapping[str, Any], name: str, warnings: list[str]) -> Mapping[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        warnings.append(f"gpo.{name} must be an object, got {type(value).__name__}; ignored")
        return {}
    return value


def _optional_text(data: Mapping[str, Any], key: str, where: str, warnings: list[str]
                   ) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        warnings.append(f"{where} must be a string, got {value!r}; ignored")
        return None
    return _text(value)


def parse_settings(value: Any) -> tuple[LspSettings, list[str]]:
    """(settings, warnings) from the editor's object; None or {} gives the defaults."""
    warnings: list[str] = []
    if value is None:
        return LspSettings(), warnings
    if not isinstance(value, Mapping):
        return LspSettings(), [f"the gpo settings must be an object, got {type(value).__name__}"]
    auto = value.get("autoOptimizeOnSave", False)
    if not isinstance(auto, bool):
        warnings.append(f"gpo.autoOptimizeOnSave must be true or false, got {auto!r}; ignored")
        auto = False
    models = _section(value, "models", warnings)
    daemon = _section(value, "daemon", warnings)
    budget_in = _section(value, "budget", warnings)
    budget: dict[str, int | str] = {}
    for key in ("initial", "final"):
        words = budget_in.get(key)
        if words is None:
            continue
        if isinstance(words, bool) or not isinstance(words, int) or words < 0:
            warnings.append(f"gpo.budget.{key} must be a whole number of words, got {words!r}; "
                            "ignored")
        else:
            budget[key] = words
    decay = budget_in.get("decay")
    if decay is not None:
        # The frontmatter's own list; imported here, once settings arrive, not before
        # `initialize` (the engine's settings module loads yaml and the metrics).
        from gpo_engine.settings import DECAYS

        if decay in DECAYS:
            budget["decay"] = decay
        else:
            warnings.append(f"gpo.budget.decay must be one of {', '.join(DECAYS)}, got "
                            f"{decay!r}; ignored")
    initial, final = budget.get("initial"), budget.get("final")
    if isinstance(initial, int) and isinstance(final, int) and initial < final:
        warnings.append("gpo.budget.initial must be >= gpo.budget.final; budget ignored")
        budget = {}
    settings = LspSettings(
        auto_optimize_on_save=auto,
        task_model=_optional_text(models, "task", "gpo.models.task", warnings),
        optimizer_model=_optional_text(models, "optimizer", "gpo.models.optimizer", warnings),
        daemon_address=_optional_text(daemon, "address", "gpo.daemon.address", warnings),
        budget=tuple(sorted(budget.items())),
    )
    return settings, warnings


def client_address(address: str) -> str:
    """A DaemonClient address from the setting: `unix:PATH`, `http://HOST:PORT`, or a
    socket path (`~` expanded)."""
    if address.startswith(("unix:", "http://")):
        return address
    return f"unix:{Path(address).expanduser()}"
