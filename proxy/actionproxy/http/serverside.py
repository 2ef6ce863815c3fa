"""aiohttp's server side without its client, for the cold start.

`import aiohttp` runs the package's `__init__`, which imports the HTTP client (client,
connector, cookie jar, ssl): well over half of aiohttp's import time, and never used by the
proxy. `install()` puts the package in sys.modules as it is before its `__init__` has run
(its real path, spec and version), so `import aiohttp.web` loads the server modules alone.
Nothing sees a partial package: the first access to a name only the full package has (say
`aiohttp.ClientSession`) runs the real `__init__` into the same module, once.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import types
from typing import Any

VERSION = re.compile(r'^__version__\s*=\s*"([^"]+)"', re.MULTILINE)


def install() -> None:
    """Before the first `import aiohttp...`; does nothing if aiohttp is already imported."""
    if "aiohttp" in sys.modules:
        return
    spec = importlib.util.find_spec("aiohttp")
    if spec is None or spec.origin is None or spec.submodule_search_locations is None:
        return  # not installed as a package: let the import fail as usual
    with open(spec.origin, encoding="utf-8") as handle:
        source = handle.read()
    version = VERSION.search(source)
    if version is None:  # a layout we do not know: import it whole
        return
    package = types.ModuleType("aiohttp")
    package.__spec__ = spec
    package.__file__ = spec.origin
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = "aiohttp"
    package.__version__ = version.group(1)
    package.__loader__ = spec.loader

    folder = package.__path__[0]

    def complete(name: str) -> Any:
        """`from aiohttp import web` asks for `web` before importing it: a submodule's name
        is not a reason to complete the package."""
        if (name.startswith("__") and name.endswith("__") and name != "__all__") \
                or os.path.exists(os.path.join(folder, name + ".py")) or os.path.isdir(os.path.join(folder, name)):
            raise AttributeError(f"module 'aiohttp' has no attribute {name!r}")
        del package.__dict__["__getattr__"]  # this one; the real __init__ may define its own
        exec(compile(source, spec.origin, "exec"), package.__dict__)  # noqa: S102 - aiohttp's own __init__
        return getattr(package, name)

    package.__getattr__ = complete  # type: ignore[method-assign]
    sys.modules["aiohttp"] = package
