"""Debian's Emacs (28.2 with elpa-eglot 1.9 in CI) with editors/emacs/gpo.el against the real
`gpo lsp`.

`emacs -Q --batch` loads gpo.el and eglot, and runs editors/emacs/tests/real.el: eglot starts
`python -m gpo_server.cli lsp`, which starts the daemon on demand in a temp runtime dir; the
models are the test model server (scripted capitals pair), served from this test's event loop
while Emacs runs as an asyncio subprocess. Eglot 1.9 never sends `codeAction/resolve`, so
the apply action must carry its edit.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.model_server import ModelServer
from tests.processes import run_to_end
from tests.scripted_models import GOOD, ScriptedModels, write_capitals
from tests.test_lsp_server import server_env, short_dir  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "editors" / "emacs" / "gpo.el"
SCRIPT = ROOT / "editors" / "emacs" / "tests" / "real.el"
BROKEN_LINE = "gpo.candidates: 2: 3\n"  # the frontmatter's line 5: invalid YAML


def emacs() -> str:
    binary = shutil.which("emacs")
    if binary is None:
        pytest.skip("emacs is not installed (Debian: apt-get install emacs-nox elpa-eglot)")
    return binary


def eglot_folder(binary: str) -> Path:
    """The folder eglot loads from: Debian's elpa-eglot, or Emacs 29+'s own.

    Asked of `emacs --batch` without -Q, which reads the site start files that put
    Debian's ELPA packages on the load path; the test then runs -Q with this one folder.
    """
    found = subprocess.run(
        [binary, "--batch", "--eval", '(princ (or (locate-library "eglot") ""))'],
        capture_output=True, text=True, timeout=60, check=False).stdout.strip()
    if not found:
        pytest.skip("eglot is not installed (Emacs 28: apt-get install elpa-eglot; "
                    "built in from Emacs 29)")
    return Path(found).parent


FONT_LOCK_CHECK = """
(with-temp-buffer
  (setq gpo-auto-start nil)
  (insert "---\\nmodel: openai/x\\n---\\n{{role \\"system\\"}}Hi {{#if a}}{{country}}{{/if}}\\n")
  (dotprompt-mode)
  (font-lock-ensure)
  (princ (format "%S" (list major-mode (get-text-property 1 'face) (get-text-property 5 'face)
                            (get-text-property 26 'face) (get-text-property 46 'face)
                            (get-text-property 58 'face)))))
"""


def test_gpo_el_byte_compiles_without_warnings(tmp_path: Path) -> None:
    binary = emacs()
    eglot = str(eglot_folder(binary))
    copy = tmp_path / "gpo.el"
    shutil.copyfile(PACKAGE, copy)
    done = subprocess.run(
        [binary, "-Q", "--batch", "-L", eglot, "--eval", "(setq byte-compile-error-on-warn t)",
         "-f", "batch-byte-compile", str(copy)],
        capture_output=True, text=True, timeout=120, check=False)
    report = done.stderr + done.stdout
    assert done.returncode == 0, report
    assert "Warning" not in report, report
    # The compiled package: .prompt files open in dotprompt-mode, highlighted.
    done = subprocess.run(
        [binary, "-Q", "--batch", "-L", eglot, "-l", str(tmp_path / "gpo.elc"),
         "--eval", '(princ (assoc-default "x.prompt" auto-mode-alist (function string-match)))',
         "--eval", FONT_LOCK_CHECK],
        capture_output=True, text=True, timeout=120, check=False)
    report = done.stderr + done.stdout
    assert done.returncode == 0, report
    assert done.stdout == ("dotprompt-mode(dotprompt-mode gpo-frontmatter-fence-face "
                           "gpo-frontmatter-key-face gpo-helper-tag-face gpo-block-tag-face "
                           "gpo-tag-face)"), report


async def test_emacs_applies_a_real_suggestion(short_dir: Path) -> None:  # noqa: F811
    binary = emacs()
    eglot = eglot_folder(binary)
    ws = short_dir / "ws"
    prompt = write_capitals(ws, steps=2, candidates=2)
    (ws / ".git").mkdir()  # the project root eglot finds
    (short_dir / "home").mkdir()  # Emacs's ~ (auto-save lists and such stay in the temp dir)
    original = prompt.read_text(encoding="utf-8")
    frontmatter = original[:original.index("---\n", 4) + 4]
    assert "gpo.candidates: 2\n" in frontmatter
    prompt.write_text(original.replace("gpo.candidates: 2\n", BROKEN_LINE), encoding="utf-8")
    async with ModelServer(answer=ScriptedModels([GOOD]).answer) as models:
        env = {**server_env(short_dir, models.api_base), "GPO_TEST_DIR": str(short_dir),
               "GPO_TEST_PYTHON": sys.executable, "HOME": str(short_dir / "home"),
               "PYTHONPATH": str(ROOT)}
        code, out, err = await run_to_end(
            [binary, "-Q", "--batch", "-L", str(eglot), "-l", str(SCRIPT)], ws, env, 300)
    report = err + out
    print(report)  # the driver's log: pytest shows it with -s or on a failure
    assert code == 0, report
    assert "all checks passed" in report, report
    saved = prompt.read_text(encoding="utf-8")
    assert saved.startswith(frontmatter), report  # byte for byte, the fix included
    assert saved[len(frontmatter):].startswith("Name the capital city of the country."), saved
    assert saved[len(frontmatter):] != original[len(frontmatter):]
    assert models.requests > 0
