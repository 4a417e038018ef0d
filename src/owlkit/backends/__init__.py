"""Inference backends: one base model in memory plus the adapters that share it, serving token requests
for `owl run`, `owl chat` and `owl serve` (base.py is the interface; torch_backend.py and gguf_backend.py
the built-in two; adapters.py checks a stored adapter against a base and hands a backend its files in
the form it loads; loading.py is the one entry point that loads a stored artifact, as a model object or
in a backend; session.py the prompt and reply helpers of the run and chat commands).

They sit above the engines (runtime, quantize) and the store: a backend opens stored artifacts, and
every adapter is checked against its base's lineage once, in adapters.py, before a backend loads it."""
