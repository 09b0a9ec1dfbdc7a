"""Old module names (splatsr 0.1's flat layout) keep importing, with a DeprecationWarning.

``import splatsr.solver`` gives a module whose attributes are looked up in the new homes
(``splatsr.core.solver``, ...); a name found in none of them raises an AttributeError that
names where to look.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Any

MOVED: dict[str, tuple[str, ...]] = {
    "render": ("splatsr.core.render",),
    "model": ("splatsr.core.model",),
    "robust": ("splatsr.core.robust",),
    "solver": ("splatsr.core.solver", "splatsr.workflow", "splatsr.io.export"),
    "psf": ("splatsr.core.psf", "splatsr.workflow"),
    "stack": ("splatsr.io.stack", "splatsr.core.checks"),
    "export": ("splatsr.io.export",),
    "fetch": ("splatsr.io.fetch",),
    "s2": ("splatsr.io.sentinel2",),
    "sample": ("splatsr.io.sample",),
    "simulate": ("splatsr.evaluate.simulate",),
    "validate": ("splatsr.evaluate.registration", "splatsr.evaluate.metrics"),
    "sweep": ("splatsr.evaluate.sweep",),
    "report": ("splatsr.evaluate.report",),
    "tiling": ("splatsr.tiles.plan", "splatsr.tiles.store", "splatsr.errors"),
    "tile_sources": ("splatsr.tiles.sources",),
    "tiled": ("splatsr.tiles.run",),
    "mosaic": ("splatsr.tiles.mosaic",),
}


class _Alias(types.ModuleType):
    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"moved to {', '.join(targets)}")
        self.__targets = targets

    def __getattr__(self, attr: str) -> Any:
        for target in self.__targets:
            mod = importlib.import_module(target)
            if hasattr(mod, attr):
                return getattr(mod, attr)
        raise AttributeError(f"{self.__name__} moved to {' / '.join(self.__targets)}, "
                             f"which have no {attr!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # ``import splatsr.simulate`` rebinds the package attribute ``splatsr.simulate`` (the
        # function) to this module; calling the module calls the function of the same name
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        head, _, tail = fullname.partition(".")
        if head != "splatsr" or tail not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> types.ModuleType:
        targets = MOVED[spec.name.partition(".")[2]]
        warnings.warn(f"{spec.name} is now {' / '.join(targets)}", DeprecationWarning,
                      stacklevel=3)
        return _Alias(spec.name, targets)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.append(_Finder())
