"""The Petals venv builder's cache rules, without building anything: keyed by the pins, never an interrupted build."""

from __future__ import annotations

import os
import subprocess
import sys

import petals_venv
import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REAL_PETALS_CACHE", str(tmp_path))
    return tmp_path


def test_the_venv_is_keyed_by_the_pins(monkeypatch):
    key = petals_venv.pins_key()
    assert petals_venv.venv_dir().name == f"petals-venv-{key}"
    monkeypatch.setattr(petals_venv, "STEPS", (((), ("torch==2.13.0", "petals==2.2.0")),))
    assert petals_venv.pins_key() != key


def test_a_finished_venv_is_reused_without_running_anything(cache, monkeypatch):
    python = petals_venv.venv_python()
    python.parent.mkdir(parents=True)
    python.touch()
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    assert petals_venv.build(log=lambda line: None) == python


def test_an_interrupted_build_is_neither_used_nor_kept(cache, monkeypatch):
    """A failing step leaves no venv behind; a build dir whose builder died is removed by the next build."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = cache / f"{petals_venv.venv_dir().name}.building-orphan"
    (orphan / "bin").mkdir(parents=True)
    (orphan / "bin" / "python").touch()
    (orphan / "builder.pid").write_text(dead.stdout.strip())
    alive = cache / f"{petals_venv.venv_dir().name}.building-alive"
    alive.mkdir()
    (alive / "builder.pid").write_text(str(os.getpid()))

    calls = []

    def failing_pip(cmd, **kwargs):
        calls.append(cmd)
        if "pip" in cmd:
            raise subprocess.CalledProcessError(1, cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(subprocess.CalledProcessError):
        petals_venv.build(log=lambda line: None)
    assert not petals_venv.is_built()
    assert [p.name for p in cache.iterdir()] == [alive.name]  # a build still running elsewhere is left alone
