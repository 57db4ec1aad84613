"""The repository stands on its own: no tracked file points outside it at the reference material it was built from."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A path with a "shared" component that starts at "..", "~", "$VAR" or "/" ("../shared", "/work/shared/x",
# "$HOME/shared"), or "shared" quoted as a path part (Path joins, os.path.join); not "private/shared/link-local".
_OUTSIDE = re.compile(r"""(?:^|[\s`'"(\[=:,])(?:\.\.|~|\$\{?\w+\}?)?(?:/[\w.-]+)*/shared(?![\w.-])|["']shared["']""")


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
    this_test = Path(__file__).resolve()  # it spells the patterns out, to test them
    hits = references_outside([f for f in tracked_text_files(REPO) if f.resolve() != this_test], REPO)
    assert not hits, "files refer to shared/ outside the repository:\n" + "\n".join(hits)


def test_the_check_names_file_and_line(tmp_path):
    (tmp_path / "ok.md").write_text("a shared future; private/shared/link-local addresses: not paths\n")
    (tmp_path / "bad.md").write_text("intro\nThe vectors in `../shared/protocol/` must sit beside it.\n")
    (tmp_path / "bad.py").write_text('ROOT = Path(__file__).parents[2] / "shared" / "protocol"\n')
    (tmp_path / "bad.sh").write_text("python /work/shared/realpetals/check.py\n")
    (tmp_path / "more.txt").write_text(
        "see ../shared\nROOT.parent / 'shared'\ncd /work/shared\n$HOME/shared/x\nos.path.join('..', 'shared', 'p')\n"
    )
    hits = references_outside(sorted(tmp_path.iterdir()), tmp_path)
    assert hits == [
        "bad.md:2: The vectors in `../shared/protocol/` must sit beside it.",
        'bad.py:1: ROOT = Path(__file__).parents[2] / "shared" / "protocol"',
        "bad.sh:1: python /work/shared/realpetals/check.py",
        "more.txt:1: see ../shared",
        "more.txt:2: ROOT.parent / 'shared'",
        "more.txt:3: cd /work/shared",
        "more.txt:4: $HOME/shared/x",
        "more.txt:5: os.path.join('..', 'shared', 'p')",
    ]
