"""``--plugin``: import a user's file or module before the registry is read, so its methods run.

The same plugins are imported again inside every cell's process (a Slurm job, say), which is why
:class:`benchmarks.runner.cell.RunOptions` carries them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PluginError", "load_plugins"]


class PluginError(ValueError):
    """A plugin that does not exist or fails to import (names it and why)."""


def _is_file(plugin: str) -> bool:
    return plugin.endswith(".py") or Path(plugin).exists()


def load_plugins(plugins: Iterable[str]) -> None:
    """Import each plugin: a ``.py`` file (by path) or a module name; each once per process."""
    for plugin in plugins:
        if not _is_file(plugin):
            try:
                importlib.import_module(plugin)
            except ImportError as exc:
                raise PluginError(f"--plugin {plugin}: not a file and not an importable module "
                                  f"({exc})") from exc
            continue
        path = Path(plugin)
        if not path.is_file():
            raise PluginError(f"--plugin {plugin}: no such file ({path.resolve()})")
        name = f"hashbench_plugin_{path.stem}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise PluginError(f"--plugin {plugin} failed to import: {type(exc).__name__}: "
                              f"{exc}") from exc
