"""Load one module of the project as it was at another git revision, beside today's.

The micro-benchmarks (``game_apply.py``, ``wire_codec.py``) time a module against
its own earlier version in one process: the old source is read with ``git show``
(or from a file) and imported under another name.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_baseline(spec: str, path: str, name: str) -> ModuleType:
    """``path`` (relative to the repository) at git revision ``spec``, or the file at path
    ``spec`` if there is one, imported as module ``name``."""
    if Path(spec).is_file():
        source = Path(spec).read_text()
    else:
        source = subprocess.run(
            ["git", "show", f"{spec}:{path}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=f"_{name}.py", delete=False) as handle:
        handle.write(source)
    try:
        module_spec = importlib.util.spec_from_file_location(name, handle.name)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses look their module up by name
        module_spec.loader.exec_module(module)
    finally:
        os.unlink(handle.name)
    return module
