"""Inference backends: one base model in memory plus the adapters that share it, serving token requests
for `owl run`, `owl chat` and `owl serve` (base.py is the interface; torch_backend.py and gguf_backend.py
the built-in two; session.py the prompt and reply helpers of the run and chat commands).

They sit above the engines (runtime, quantize) and the store: a backend opens stored artifacts and
checks each adapter against its base's lineage."""
