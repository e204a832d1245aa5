"""Build the two shipping formats of setup.py into a directory (``make dist``: dist/).

    python .ci/dist.py [DIR]

- ``DIR/minibatch_kmeans-<version>-py3-none-any.whl``: for ``pip install`` and Databricks
  wheel tasks (console scripts ``mbkm-<job>``), built by ``pip wheel --no-deps`` from a
  fresh copy of setup.py, README.md, lib/ and jobs/, so no stale build/ or egg-info of
  the working tree ends up in it (and the tree is left untouched).
- ``DIR/minibatch_kmeans.zip``: for ``spark-submit --py-files``. At its root,
  ``minibatch_kmeans/`` (from lib/) and ``minibatch_kmeans_jobs/`` (from jobs/), as
  setup.py's ``package_dir`` maps them: the ``.py`` files of every package (a directory
  with ``__init__.py``), nothing from ``__pycache__`` (bytecode, numba caches). Entries
  are sorted and dated 1980-01-01, so the same sources give the same bytes.

Neither holds the third-party dependencies: the cluster's Python (or pip) provides them.
tests/test_cluster.py builds with this same script. Needs pip, setuptools and wheel in
this interpreter (``make install`` puts them in .venv).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name -> source directory, as setup.py's package_dir
PACKAGES = {"minibatch_kmeans": ROOT / "lib" / "minibatch_kmeans",
            "minibatch_kmeans_jobs": ROOT / "jobs"}
ZIP_NAME = "minibatch_kmeans.zip"
# what setup.py reads
WHEEL_SOURCES = ("setup.py", "pyproject.toml", "README.md", "LICENSE", "lib", "jobs")


def package_files(name: str, source: Path):
    """(path in the zip, file) for every ``.py`` file of ``source``'s packages."""
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        # only packages, as find_packages: no __pycache__, no egg-info, no data folders
        dirnames[:] = sorted(d for d in dirnames if (here / d / "__init__.py").is_file())
        for f in sorted(filenames):
            if f.endswith(".py"):
                yield f"{name}/{(here / f).relative_to(source).as_posix()}", here / f


def build_zip(out) -> Path:
    """Write the ``--py-files`` zip at ``out`` (replacing it) and return its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, source in PACKAGES.items():
            if not (source / "__init__.py").is_file():
                raise SystemExit(f"error: {source} is not a package (no __init__.py)")
            for arcname, path in package_files(name, source):
                info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, path.read_bytes())
    os.replace(tmp, out)
    return out


def build_wheel(out_dir) -> Path:
    """Build the wheel into ``out_dir`` (replacing one of the same name) and return it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    with tempfile.TemporaryDirectory(prefix="mbkm-wheel-") as tmp:
        src, wheels = Path(tmp) / "src", Path(tmp) / "wheels"
        src.mkdir()
        for name in WHEEL_SOURCES:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, src / name, ignore=ignore)
            else:
                shutil.copy2(ROOT / name, src / name)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", str(wheels), str(src)], check=True)
        (built,) = wheels.glob("*.whl")
        return Path(shutil.move(str(built), str(out_dir / built.name)))


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0] if args else ROOT / "dist")
    wheel = build_wheel(out_dir)
    zip_path = build_zip(out_dir / ZIP_NAME)
    with zipfile.ZipFile(zip_path) as zf:
        print(f"wrote {wheel} and {zip_path} ({len(zf.namelist())} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
