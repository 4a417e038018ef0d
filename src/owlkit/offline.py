"""Third-party libraries kept offline and quiet wherever owlkit runs: the CLI, the demo, tests, library use.

owlkit never downloads at run time (every model comes from the store), and prints nothing a user cannot act
on. Two libraries act on their own at import time, before any owlkit code could pass them an option:

- bitsandbytes >= 0.49 on a CPU with AVX512-BF16 asks the ``kernels`` package for a Hub kernel
  (``kernels-community/quantization-bitsandbytes``) inside ``import bitsandbytes`` itself, with no switch to
  turn that off. Online it reaches the Hub (a publisher check, then a download); offline it prints "Skipping
  publisher trust check…" and "Failed to load CPU gemm_4bit_forward…". owlkit keeps that lookup offline
  (huggingface_hub's offline flag, held for the length of that one import) and quiets the two loggers that
  print about it for that one import: the lookup fails at once and bitsandbytes uses the CPU kernel of its
  own library, which is also what it does on every CPU without AVX512-BF16. (The other way out, holding
  bitsandbytes below 0.49, would also lose its fixes; the lookup is the only thing kept from it.)
- transformers draws "Loading weights" progress bars on stderr; when stderr is not a terminal (a log file,
  CI, a captured test) they are turned off as transformers' ``disable_progress_bar()`` does it.

Both are done by an import hook (a meta path finder) that ``owlkit/__init__`` installs: it wraps only the
first import of those two packages, whoever asks for it (peft and transformers import bitsandbytes
themselves). A process that imported them before owlkit keeps their behaviour.

Nothing here, nor anywhere in owlkit, changes ``os.environ``: every model load passes ``local_files_only=True``,
``trust_remote_code=False`` and ``use_kernels=False`` itself. A front end that wants the libraries' own log
lines quiet (the CLI: its own messages replace them) calls :func:`quiet_library_logs`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

# The loggers that report bitsandbytes' kernel lookup: its CPU backend ("Failed to load CPU
# gemm_4bit_forward from kernels-community…") and kernels' Hub resolver ("Skipping publisher trust check…").
KERNEL_LOOKUP_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub")


_quiet_logs = False


def quiet_library_logs() -> None:
    """transformers logs errors only (its warnings and info lines are for its own callers; owl prints
    its own): now if it is imported, else when it is. For front ends; the library never calls it."""
    global _quiet_logs
    _quiet_logs = True
    if "transformers" in sys.modules:
        _quiet_transformers()


def _quiet_transformers() -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()


@contextlib.contextmanager
def kernel_lookup_offline() -> Iterator[None]:
    """For the length of the block: huggingface_hub offline (what ``kernels`` asks before it goes to the
    Hub) and the kernel lookup's two loggers silent."""
    import logging

    try:
        from huggingface_hub import constants
    except ImportError:  # without huggingface_hub there is no kernels package and no lookup
        constants = None
    loggers = [logging.getLogger(name) for name in KERNEL_LOOKUP_LOGGERS]
    saved = [logger.disabled for logger in loggers]
    offline = constants.HF_HUB_OFFLINE if constants is not None else None
    try:
        if constants is not None:
            constants.HF_HUB_OFFLINE = True
        for logger in loggers:
            logger.disabled = True
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = offline
        for logger, was in zip(loggers, saved, strict=True):
            logger.disabled = was


def _import_bitsandbytes(load: Any, module: ModuleType) -> None:
    with kernel_lookup_offline():
        load(module)


def _import_transformers(load: Any, module: ModuleType) -> None:
    load(module)
    if not _stderr_is_terminal():
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if _quiet_logs:
        _quiet_transformers()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class _FirstImport:
    """A meta path finder (duck-typed: importing importlib.abc would cost 12 ms at every `owl` start) that
    wraps the loading of the named top-level packages, once each: finds their spec with the finders after
    this one and runs ``wrapper(original_exec_module, module)`` in place of ``exec_module``. The
    wrapper is spent when the package is executed, not when its spec is found (``importlib.util.find_spec``,
    which transformers uses to ask whether bitsandbytes is installed, finds without importing)."""

    def __init__(self, wrappers: dict[str, Any]) -> None:
        self.wrappers = dict(wrappers)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.wrappers:
            return None
        spec = None
        for finder in [f for f in sys.meta_path if f is not self]:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            wrapper = self.wrappers.pop(fullname, None)
            if not self.wrappers and self in sys.meta_path:
                sys.meta_path.remove(self)
            if wrapper is None:  # another spec of the package ran first
                original(module)
            else:
                wrapper(original, module)

        spec.loader.exec_module = exec_module  # a loader made for this spec alone
        return spec


def install_import_hooks() -> None:
    """Install the hook (idempotent); packages imported already are left as they are."""
    if any(isinstance(finder, _FirstImport) for finder in sys.meta_path):
        return
    wrappers = {
        name: wrapper
        for name, wrapper in (("bitsandbytes", _import_bitsandbytes), ("transformers", _import_transformers))
        if name not in sys.modules
    }
    if wrappers:
        sys.meta_path.insert(0, _FirstImport(wrappers))
