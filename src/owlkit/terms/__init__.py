"""Licenses and terms: what an artifact may be used for, and what it passes on to derivatives.

Finding an artifact's license (card metadata, GGUF metadata, LICENSE texts) is a format concern, done by
the readers below the store (``owlkit.formats.license``); the knowledge base of obligations (``kb``),
their propagation through lineage (``propagate``) and the openness ratings (``openness``) build on its
ids. Importing this package imports nothing else: each command loads only the modules it uses.
"""
