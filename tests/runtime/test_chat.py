"""Chat templates render as transformers renders them, inside a sandbox that refuses escapes and bombs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from owlkit.errors import InvalidFile, Refused, UsageError
from owlkit.runtime.chat import render_chat
from owltest import SMOLLM_GGUF, need

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France? «Réponds» 🦉"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Japan?"},
]

# A Llama-2-style template: BOS from the variables, role checks through raise_exception.
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set sys = false %}{% set loop_messages = messages %}"
    "{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and sys %}{% set content = '<<SYS>>\\n' + sys + '\\n<</SYS>>\\n\\n' + "
    "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

# Tools as JSON, namespace(), loop controls, whitespace control: the features real templates lean on.
TOOLS_TEMPLATE = """{%- set ns = namespace(found=false) -%}
{%- if tools %}
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
{{ tools[0] | tojson(indent=2) }}
{%- endif %}
{% for m in messages %}
  {% if m.role == 'assistant' %}{% set ns.found = true %}{% continue %}{% endif %}
  <|{{ m.role }}|>{{ m.content | trim }}
  {% if loop.index > 3 %}{% break %}{% endif %}
{% endfor %}
{{ 'assistant seen' if ns.found else 'no assistant' }}{% if add_generation_prompt %}<|assistant|>{% endif %}"""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city <b>now</b> & tomorrow, 'quoted', «ünïcode»",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_llama: Path):
    """A real transformers tokenizer (bos <s>, eos </s>), to render templates through apply_chat_template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def _hf_render(tokenizer, template: str, messages: list[dict], **kwargs) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True, **kwargs
    )


@pytest.mark.realmodel
def test_smollm2_chatml_matches_transformers(hf_tokenizer) -> None:
    from owlkit.formats.gguf import read_gguf

    template = read_gguf(need(SMOLLM_GGUF)).metadata["tokenizer.chat_template"]
    assert "<|im_start|>" in template
    for messages in (
        MESSAGES,
        MESSAGES[1:2],
        [{"role": "user", "content": "What is the capital of France?"}],
    ):
        ours = render_chat(template, messages, add_generation_prompt=True)
        assert ours == _hf_render(hf_tokenizer, template, messages)
    plain = render_chat(template, [{"role": "user", "content": "Hi"}])
    assert plain.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert not render_chat(
        template, [{"role": "user", "content": "Hi"}], add_generation_prompt=False
    ).endswith("assistant\n")


def test_llama2_and_tools_templates_match_transformers(hf_tokenizer) -> None:
    ours = render_chat(LLAMA2, MESSAGES, bos_token="<s>", eos_token="</s>")
    assert ours == _hf_render(hf_tokenizer, LLAMA2, MESSAGES)
    assert ours.startswith("<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nWhat is the capital")
    ours = render_chat(TOOLS_TEMPLATE, MESSAGES, tools=TOOLS)
    assert ours == _hf_render(hf_tokenizer, TOOLS_TEMPLATE, MESSAGES, tools=TOOLS)
    assert "<b>now</b> & tomorrow, 'quoted', «ünïcode»" in ours  # tojson as HF writes it: no HTML escaping
    assert "assistant seen" in ours


def test_raise_exception_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="roles must alternate"):
        render_chat(LLAMA2, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_broken_template_is_an_invalid_file() -> None:
    with pytest.raises(InvalidFile, match="chat template: syntax error on line 1"):
        render_chat("{% for m in messages %}{{ m.content }}", MESSAGES)
    with pytest.raises(InvalidFile, match="ZeroDivisionError"):
        render_chat("{{ 1 / 0 }}", MESSAGES)
    with pytest.raises(InvalidFile):
        render_chat("{% include 'other.jinja' %}", MESSAGES)  # no loader: templates cannot read files


ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ joiner.__init__.__globals__['__builtins__']['open']('{marker}', 'w').write('x') }}",
    "{{ namespace.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ (messages|first).content.__class__.__mro__ }}",
    "{{ messages.append({'role': 'x'}) }}",
    "{{ messages[0].update({'role': 'x'}) }}",
    "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
    "{{ range.__self__.__import__('os').system('touch {marker}') }}",
    "{{ raise_exception.__globals__['sys'].modules['os'].system('touch {marker}') }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ lipsum.__globals__.os.system('touch {marker}') }}",
    "{{ ('{0.__class__}').format(messages) }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escapes_execute_nothing(template: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    messages = [{"role": "user", "content": "hi"}]
    before = [dict(m) for m in messages]
    try:
        out = render_chat(template.replace("{marker}", str(marker)), messages)
    except (Refused, InvalidFile):
        pass
    else:  # an unsafe attribute can only render as empty (jinja's undefined), never as an object
        assert "class" not in out and "function" not in out and "module" not in out, out
    assert not marker.exists()
    assert messages == before


def test_escape_through_dunder_is_refused() -> None:
    with pytest.raises(Refused, match="sandbox forbids"):
        render_chat("{{ ''.__class__.__mro__[1].__subclasses__() }}", [])
    with pytest.raises(Refused, match="sandbox forbids"):
        render_chat("{{ cycler.__init__.__globals__.os.popen('id').read() }}", [])


BOMBS = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set a = 'x' * 600000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c }}",
    "{{ 'a' * 10**10 }}",
    "{{ 2 ** (10 ** 8) }}",  # jinja reads 2 ** 10 ** 8 as (2 ** 10) ** 8, which is harmless
    "{{ 'x' | center(10**9) }}",
    "{{ ('a' * 2000) | replace('a', 'b' * 100000) }}",
    "{{ ('a\\n' * 2000) | indent('x' * 10000) }}",
    "{{ range(20000) | join('x' * 1000) }}",
    "{{ 'x'.join(['y' * 60000] * 60) }}",
    "{{ '%999999999s' % 'a' }}",
    "{{ '{:999999999}'.format('a') }}",
    "{{ ('\\t' * 60000).expandtabs(60000) }}",
    "{{ 'b' | tojson(indent=10**6) }}",
    "{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}",
    "{{ ([messages[0].content * 1000] * 100000) }}",
    "{% set ns = namespace(l=['z' * 100000]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
    "{{ ([{'content': 'c' * 100000}] * 100) | join(attribute='content') }}",
    "{{ dict.fromkeys(range(10000), 'w' * 1000) }}",
]


@pytest.mark.parametrize("template", BOMBS)
def test_loops_and_memory_bombs_are_refused_quickly(template: str) -> None:
    start = time.monotonic()
    with pytest.raises(Refused, match="chat template refused"):
        render_chat(template, [{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 10


def test_long_inputs_stay_renderable() -> None:
    # The size budget grows with the input: a 3 MB prompt still renders through a template.
    content = "word " * 600_000
    out = render_chat(
        "{% for m in messages %}{{ m.content }}{% endfor %}", [{"role": "user", "content": content}]
    )
    assert out == content


def test_inputs_are_plain_data() -> None:
    class Sneaky:
        def __str__(self) -> str:
            return "sneaky"

    with pytest.raises(UsageError, match="JSON data"):
        render_chat("{{ messages }}", [{"role": "user", "content": Sneaky()}])
    out = render_chat(
        "{{ messages[0].content }}|{{ flag }}|{{ bos_token }}", [{"role": "user", "content": ("a",)}], flag=1
    )
    assert out == "['a']|1|"


def test_dict_and_namespace_globals() -> None:
    template = (
        "{% set d = dict(a=1) %}{% set k = dict.fromkeys(['x', 'y'], 0) %}{% set ns = namespace(n=0) %}"
        "{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ d.a }}{{ k | tojson }}{{ ns.n }}"
    )
    assert render_chat(template, MESSAGES) == '1{"x": 0, "y": 0}4'


def test_generation_tag_and_strftime() -> None:
    out = render_chat(
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
        "{{ strftime_now('%Y') | length }}",
        [{"role": "assistant", "content": "ok"}],
    )
    assert out == "ok4"
