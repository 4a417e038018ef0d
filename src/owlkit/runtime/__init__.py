"""Running models: sandboxed chat templates, loading for inference, streaming generation, GGUF -> HF.

Everything here takes plain paths (a folder or file the store materialises) and knows nothing of the
store. torch and transformers are imported inside the functions that need them, so importing this
package stays cheap.
"""

from owlkit.runtime.chat import render_chat
from owlkit.runtime.convert import gguf_to_hf
from owlkit.runtime.generate import chat_prompt, stream_generate
from owlkit.runtime.load import available_memory, load_causal_lm

__all__ = [
    "available_memory",
    "chat_prompt",
    "gguf_to_hf",
    "load_causal_lm",
    "render_chat",
    "stream_generate",
]
