"""Every install command the server or the engine tells a user works from a clone: it
names a path (`pip install /path/to/gpo`), never a package name no index serves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_COMMAND = re.compile(r"\b(?:pipx|pip|uv pip) install\s+(\S+)")


def install_commands(text: str) -> list[str]:
    """What each `pip install` / `pipx install` in `text` installs (quotes dropped)."""
    return [target.strip("'\"`") for target in _COMMAND.findall(text)]


def test_commands_are_read_as_written() -> None:
    assert install_commands("run: pip install '/path/to/gpo[local]' then") == [
        "/path/to/gpo[local]"]
    assert install_commands("`pipx install /path/to/gpo`") == ["/path/to/gpo"]
    assert install_commands("pip install gpo-lsp") == ["gpo-lsp"]


def test_every_install_command_in_the_code_installs_a_clone() -> None:
    found = {}
    for folder in ("server", "gpo_engine"):
        for source in (ROOT / folder).rglob("*.py"):
            for target in install_commands(source.read_text(encoding="utf-8")):
                found[f"{source.relative_to(ROOT)}: {target}"] = target
    bad = [where for where, target in found.items() if not target.startswith(("/", "."))]
    assert bad == []
