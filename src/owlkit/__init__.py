__version__ = "0.1.0"

# Before anything of owlkit's imports bitsandbytes or transformers: keep their import-time Hub lookup
# offline and their progress bars off a non-terminal stderr (offline.py says why and how).
from owlkit.offline import install_import_hooks as _install_import_hooks

_install_import_hooks()
