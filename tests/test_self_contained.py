"""The repository stands on its own: no tracked file points outside it at the reference material it was built from."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The folder's name, spelled so that this file does not name it and can be scanned like every other.
REF = "".join(("shar", "ed"))
# A path with a REF component that starts at "..", "~", "$VAR" or "/" (../REF, /work/REF/x, $HOME/REF), or REF
# quoted as a path part (Path joins, os.path.join); not private/REF/link-local (address classes).
_OUTSIDE = re.compile(
    r"""(?:^|[\s`'"(\[=:,])(?:\.\.|~|\$\{?\w+\}?)?(?:/[\w.-]+)*/""" + REF + r"""(?![\w.-])|["']""" + REF + """["']"""
)


def tracked_text_files(repo: Path) -> list[Path]:
    """Files git tracks (so a fresh clone's view), or every file outside .git/.venv when this is not a checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True, timeout=30).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
        names = [str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file() and not skip & set(p.parts)]
    return [repo / n for n in names]


def references_outside(files: list[Path], repo: Path) -> list[str]:
    """``path:line: text`` for every line that refers to a ``shared/`` folder."""
    hits = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary (or deleted in the work tree): nothing a reader follows
        for number, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line):
                hits.append(f"{path.relative_to(repo)}:{number}: {line.strip()[:120]}")
    return hits


def test_nothing_in_the_repository_refers_to_a_shared_folder():
    hits = references_outside(tracked_text_files(REPO), REPO)  # this file included: it never spells REF out
    assert not hits, "files refer to shared/ outside the repository:\n" + "\n".join(hits)


def _r(text: str) -> str:
    return text.replace("{R}", REF)


def test_the_check_names_file_and_line(tmp_path):
    (tmp_path / "ok.md").write_text(_r("a {R} future; private/{R}/link-local addresses: not paths\n"))
    (tmp_path / "bad.md").write_text(_r("intro\nThe vectors in `../{R}/protocol/` must sit beside it.\n"))
    (tmp_path / "bad.py").write_text(_r('ROOT = Path(__file__).parents[2] / "{R}" / "protocol"\n'))
    (tmp_path / "bad.sh").write_text(_r("python /work/{R}/realpetals/check.py\n"))
    (tmp_path / "more.txt").write_text(
        _r("see ../{R}\nROOT.parent / '{R}'\ncd /work/{R}\n$HOME/{R}/x\nos.path.join('..', '{R}', 'p')\n")
    )
    hits = references_outside(sorted(tmp_path.iterdir()), tmp_path)
    assert hits == [
        _r(hit)
        for hit in [
            "bad.md:2: The vectors in `../{R}/protocol/` must sit beside it.",
            'bad.py:1: ROOT = Path(__file__).parents[2] / "{R}" / "protocol"',
            "bad.sh:1: python /work/{R}/realpetals/check.py",
            "more.txt:1: see ../{R}",
            "more.txt:2: ROOT.parent / '{R}'",
            "more.txt:3: cd /work/{R}",
            "more.txt:4: $HOME/{R}/x",
            "more.txt:5: os.path.join('..', '{R}', 'p')",
        ]
    ]
