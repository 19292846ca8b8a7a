"""PEP 517 build backend: OCA's whool, with the addon named ``integration_hub`` whatever
this checkout's folder is called.

whool names the distribution and the ``odoo/addons/<name>`` folder of the wheel after the
folder that holds ``pyproject.toml`` and has no option to set the name; it takes the name
from a ``PKG-INFO`` only when it builds from an sdist.  This repository's root is the addon,
and its checkouts are called anything (``main``, a worktree, a CI clone).  So each build
copies the files that belong in the package into a temporary folder named
``integration_hub``, with a ``PKG-INFO`` holding the name and the version (the manifest's,
plus whool's ``.N`` count of commits since it changed, read from this checkout's git
history), and lets whool build from there as it builds from an sdist.

The wheel leaves out the development tooling (``scripts/``, ``.ci/``, linters' settings);
the sdist keeps everything tracked by git, this backend included, so that a wheel can be
built from it.  Untracked files never go in (outside a git checkout: everything but caches).
"""

import email.generator
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from manifestoo_core.metadata import metadata_from_addon_dir
from whool import buildapi as whool

if sys.version_info < (3, 11):
    import tomli as tomllib
else:
    import tomllib

ADDON_NAME = "integration_hub"
# Never packaged (top-level names): version control, local state, build output.
ALWAYS_EXCLUDED = {".git", ".odoo", ".venv", "build", "dist", ".ruff_cache"}
# In the sdist (needed to rebuild) but not in the wheel (nothing an Odoo server uses).
WHEEL_EXCLUDED = {".ci", "scripts", ".gitignore", ".ruff.toml", ".pylintrc-mandatory"}


def _git_files(src):
    """Files tracked by git (and present), or None outside a git checkout."""
    try:
        out = subprocess.check_output(["git", "ls-files", "-z"], cwd=src, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError):
        return None
    return [Path(p) for p in out.decode().split("\0") if p and (src / p).is_file()]


def _source_files(src):
    """Relative paths of the files to package: git's tracked files in a checkout,
    every file (caches excepted) in an unpacked sdist or a copy without git."""
    # Nothing tracked: a copy of the tree left untracked inside some other repository.
    tracked = None if (src / "PKG-INFO").is_file() else _git_files(src)
    if tracked:
        return tracked
    files = []
    for root, dirs, names in os.walk(src):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.endswith(".egg-info")]
        files += [(Path(root) / n).relative_to(src) for n in names if not n.endswith((".pyc", ".pyo", ".whl"))]
    return files


def _metadata(src):
    """whool's metadata, computed as if the folder were named after the addon."""
    pyproject = src / "pyproject.toml"
    with pyproject.open("rb") as f:
        options = tomllib.load(f).get("tool", {}).get("whool", {})
    strategy = os.environ.get("WHOOL_POST_VERSION_STRATEGY_OVERRIDE")
    if strategy:
        options["post_version_strategy_override"] = strategy
    with tempfile.TemporaryDirectory() as tmp:
        named = Path(tmp) / ADDON_NAME
        # A link keeps the git history reachable: the version counts its commits.
        named.symlink_to(src, target_is_directory=True)
        return metadata_from_addon_dir(named, options, precomputed_metadata_file=src / "PKG-INFO")


@contextmanager
def _staged(for_wheel):
    """A temporary folder named after the addon, holding the files to package and a
    PKG-INFO; the current directory while whool builds (whool builds from the cwd)."""
    src = Path.cwd()
    metadata = _metadata(src)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / ADDON_NAME
        # pyproject.toml even before it is committed: whool reads its [tool.whool] options.
        for rel in {*_source_files(src), Path("pyproject.toml")}:
            if rel.parts[0] in ALWAYS_EXCLUDED or (for_wheel and rel.parts[0] in WHEEL_EXCLUDED):
                continue
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, stage / rel)
        with (stage / "PKG-INFO").open("w", encoding="utf-8") as f:
            email.generator.Generator(f, mangle_from_=False, maxheaderlen=0).flatten(metadata)
        os.chdir(stage)
        try:
            yield
        finally:
            os.chdir(src)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    wheel_directory = os.path.abspath(wheel_directory)
    with _staged(for_wheel=True):
        return whool.build_wheel(wheel_directory, config_settings)


def build_sdist(sdist_directory, config_settings=None):
    sdist_directory = os.path.abspath(sdist_directory)
    with _staged(for_wheel=False):
        return whool.build_sdist(sdist_directory, config_settings)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    # whool links build/__editable__/odoo/addons/<folder name> to the checkout: only a
    # folder named after the addon gives the right link, and the link must outlive the build.
    if Path.cwd().name != ADDON_NAME:
        raise RuntimeError(
            f"an editable install needs the checkout folder to be named {ADDON_NAME!r} "
            f"(it is {Path.cwd().name!r}); use `pip install .`, or scripts/run's addons path"
        )
    return whool.build_editable(wheel_directory, config_settings, metadata_directory)
