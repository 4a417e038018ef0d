"""owlkit: the open-weights workbench. ``from owlkit import Owl`` is the Python API (owlkit.api)."""

# Before anything of owlkit's imports bitsandbytes or transformers: keep their import-time Hub lookup
# offline and their progress bars off a non-terminal stderr (offline.py says why and how).
from owlkit.offline import install_import_hooks as _install_import_hooks
from owlkit.version import __version__

__all__ = ["Owl", "__version__"]

_install_import_hooks()


def __getattr__(name: str) -> object:
    # `from owlkit import Owl` without importing the API (and the store) for every `import owlkit.x`
    if name == "Owl":
        from owlkit.api import Owl

        return Owl
    raise AttributeError(f"module 'owlkit' has no attribute {name!r}")
