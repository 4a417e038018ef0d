"""Readers for the files owlkit imports. This package knows nothing of the store or of torch at import
time: every reader is a pure function from a path to a description, and every violation of a format's
rules raises :class:`owlkit.errors.InvalidFile` with a one-line reason."""
