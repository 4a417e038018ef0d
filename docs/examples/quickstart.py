"""owlkit from Python: tune a LoRA on stories260k, merge it, quantize the merge, ask what its terms
allow, and serve the base with the adapter to the `openai` client.

    python docs/examples/quickstart.py PATH/TO/stories260k/hf [STORE]
"""

import sys
import tempfile

from openai import OpenAI

from owlkit import Owl

owl = Owl(home=sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="owl-"))

base = owl.import_(sys.argv[1], name="stories").artifact
data = owl.data_demo(train=64, heldout=8)
adapter = owl.tune(
    base,
    data,
    method="lora",
    r=8,
    targets="all-linear",
    steps=12,
    lr=3e-3,
    batch_size=4,
    seq_len=256,
    name="stories-lora",
)
print(
    f"tuned {adapter.name}: {adapter.steps} steps, loss {adapter.log[0]['loss']:.3f} -> {adapter.log[-1]['loss']:.3f}"
)

merged = owl.merge(base, adapter, name="stories-merged")
for row in owl.quantize(merged, to="gguf-q8_0").rows:
    print(f"{row.artifact}: perplexity {row.ppl_source:.2f} -> {row.ppl:.2f}, top-1 agreement {row.top1:.1%}")

verdict = owl.terms(merged, use="commercial")
print(f"commercial use of {merged.name}: {verdict.verdict}")

with owl.serve("stories", adapters=[("lora", adapter)]) as base_url:
    client = OpenAI(base_url=base_url, api_key="unused")
    for model in ("stories", "lora"):
        reply = client.completions.create(
            model=model, prompt="Once upon a time", max_tokens=12, temperature=0
        )
        print(f"{model}: {reply.choices[0].text!r}")
