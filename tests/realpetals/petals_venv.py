"""Build (once) and locate the separate venv that runs real Petals servers for the `petals` tests.

    python tests/realpetals/petals_venv.py          # prints the venv's python; builds it first if needed

Petals must never share a venv or a process with py-libp2p (both register protobuf `crypto.pb`), so it gets a venv
of its own under ~/.cache/petals-monitor/ (or $REAL_PETALS_CACHE), keyed by a hash of the pins below: changing a
pin builds a new venv, an unchanged one is reused. A build runs in `<venv>.building` and is renamed into place only
when it completes and imports, so an interrupted build is never taken for a finished one. Stdlib only: the Makefile
runs this before anything else exists.

Why these pins (petals 2.2.0.post1 on CPU, Python 3.11, no network but the package index):
- torch 2.13.0 first: a CPU wheel lies on the machine's disk; anything else would pull a multi-GB CUDA build.
  Every later install is constrained to it.
- petals with --no-deps: it pins hivemind 1.1.10.post2, an sdist whose build downloads Go. hivemind 1.1.12 has a
  manylinux wheel with p2pd inside; the names it stopped re-exporting are put back at run time by `launch.py`.
- pydantic 1.x (petals needs <2; hivemind 1.1.12 only imports `pydantic.v1`, which 1.10.17+ has) and the 2023-era
  transformers / tokenizers / huggingface-hub / accelerate that petals 2.2.0 was released against.
- bitsandbytes and peft with --no-deps: petals imports them whenever it builds a block, even on CPU.
- speedtest-cli: imported when petals' throughput module loads (never run: the servers get --throughput numbers).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PETALS_VERSION = "2.2.0.post1"
TORCH = "torch==2.13.0"
# (extra pip flags, requirements), installed in this order with torch pinned by a constraints file.
STEPS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    ((), (TORCH,)),
    (("--no-deps",), (f"petals=={PETALS_VERSION}", "hivemind==1.1.12")),
    (
        (),
        (
            "pydantic>=1.10.17,<2",
            "transformers==4.34.1",
            "tokenizers>=0.14,<0.15",
            "huggingface-hub==0.17.3",
            "accelerate==0.24.1",
            "safetensors>=0.3.1",
            "sentencepiece>=0.1.99",
            "tensor-parallel==1.0.23",
            "speedtest-cli==2.1.3",
            "numpy<2",
            "humanfriendly",
            "async-timeout>=4.0.2",
            "packaging>=20.9",
            "Dijkstar>=2.6.0",
            "tqdm",
            "PyYAML",
            "scipy",
            "prefetch_generator>=1.0.1",
            "msgpack>=0.5.6",
            "sortedcontainers",
            "uvloop>=0.14.0",
            "grpcio-tools>=1.33.2",
            "protobuf>=5.29.0",
            "configargparse>=1.2.3",
            "py-multihash>=0.2.3",
            "cryptography>=3.4.6",
            "varint>=1.0.2",
            "base58>=1.0.2",
            "netaddr>=1.3.0",
            "idna>=3.10",
            "py-cid>=0.3.0",
            "psutil",
        ),
    ),
    (("--no-deps",), ("bitsandbytes==0.41.1", "peft==0.5.0")),
)
HERE = Path(__file__).resolve().parent
# Proves the venv can do what the harness asks of it; run before the build is renamed into place.
SMOKE = (
    "import sys; sys.path.insert(0, sys.argv[1]); import petals_compat; petals_compat.apply(); "
    "import torch, petals.server.server, petals.utils.peft, petals.server.reachability; "
    "assert torch.__version__.startswith('2.13.0'), torch.__version__"
)


def pins_key() -> str:
    """Hash of everything that decides the venv's content: the pins, their order, and the interpreter's version."""
    text = repr((STEPS, SMOKE, sys.version_info[:2]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("REAL_PETALS_CACHE", Path.home() / ".cache" / "petals-monitor"))


def venv_dir() -> Path:
    return cache_root() / f"petals-venv-{pins_key()}"


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "python"


def is_built(venv: Path | None = None) -> bool:
    return venv_python(venv).exists()


def _pip(python: Path, flags: tuple[str, ...], reqs: tuple[str, ...], constraints: Path) -> None:
    cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", str(constraints)]
    subprocess.run([*cmd, *flags, *reqs], check=True)


def build(log=print) -> Path:
    """Return the venv's python, building the venv first when no finished build of these pins exists."""
    final = venv_dir()
    if is_built(final):
        return venv_python(final)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    _drop_stale_builds(root)
    work = Path(tempfile.mkdtemp(prefix=f"{final.name}.building-", dir=root))
    (work / "builder.pid").write_text(str(os.getpid()))
    try:
        log(f"building the Petals {PETALS_VERSION} venv in {work} (once per set of pins; a few minutes)")
        subprocess.run([sys.executable, "-m", "venv", str(work)], check=True)
        constraints = work / "torch-constraint.txt"
        constraints.write_text(TORCH + "\n")
        for flags, reqs in STEPS:
            _pip(venv_python(work), flags, reqs, constraints)
        subprocess.run([str(venv_python(work)), "-c", SMOKE, str(HERE)], check=True, env=offline_env())
        try:
            work.rename(final)  # atomic; loses the race harmlessly if another build finished first
        except OSError:
            if not is_built(final):
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return venv_python(final)


def _drop_stale_builds(root: Path) -> None:
    """Interrupted builds left behind by a killed run (their builder, named in builder.pid, is gone)."""
    for path in root.glob("petals-venv-*.building-*"):
        if not _building_now(path):
            shutil.rmtree(path, ignore_errors=True)


def _building_now(path: Path) -> bool:
    marker = path / "builder.pid"
    try:
        os.kill(int(marker.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def offline_env(base: dict | None = None) -> dict:
    """The environment every Petals process gets: no hub access, one thread each (2 cores are shared)."""
    env = dict(os.environ if base is None else base)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        BITSANDBYTES_NOWELCOME="1",
        PYTHONWARNINGS="ignore",
    )
    env.pop("PYTHONPATH", None)
    return env


if __name__ == "__main__":
    try:
        print(build(log=lambda line: print(line, file=sys.stderr, flush=True)))
    except subprocess.CalledProcessError as exc:
        print(f"error: building the Petals venv failed: {exc}", file=sys.stderr)
        sys.exit(1)
