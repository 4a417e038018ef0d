"""Licenses and terms: what an artifact may be used for, and what it passes on to derivatives.

Finding an artifact's license (card metadata, GGUF metadata, LICENSE texts) is a format concern, done by
the readers below the store (``owlkit.formats.license``); the knowledge base of obligations and their
propagation through lineage build on its ids.
"""

from owlkit.formats.license import detect_license, match_license_text, normalize_license

__all__ = ["detect_license", "match_license_text", "normalize_license"]
