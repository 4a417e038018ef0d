"""owlkit's version (its own module, so importing it never pulls in the package's front door)."""

__version__ = "0.1.0"
