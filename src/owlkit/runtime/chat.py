"""Chat templates, rendered only inside jinja2's sandbox.

A chat template is Jinja code shipped inside a model file (GGUF metadata, tokenizer_config.json,
chat_template.jinja), so it is untrusted input: rendering GGUF templates with a plain Jinja environment
gave remote code execution (llama-cpp-python CVE-2024-34359, SGLang CVE-2026-5760). We render with
``ImmutableSandboxedEnvironment`` (no dunder attributes, no mutation of lists and dicts), configured as
transformers configures its own (trim_blocks, lstrip_blocks, loop controls, the ``generation`` tag,
``raise_exception``, an HTML-unsafe ``tojson``, ``strftime_now``), so a template renders the same text
here as through ``tokenizer.apply_chat_template``.

The sandbox stops code execution but not a template that loops or allocates without end, which would
hang or exhaust ``owl run`` and ``owl serve``. So on top of it:

- a step budget: a template may execute at most ``MAX_STEPS`` lines of its compiled code (counted with a
  trace function on the template's own frames only), which bounds every loop, nested or recursive;
- a size budget: no string or list a template builds (seen in its variables at every step, in call,
  operator and filter results, and in namespace assignments) nor its output may exceed
  ``MAX_OUTPUT_CHARS`` plus twice the size of the input messages; lists built with ``+`` and ``*``
  are measured by what they would print as (a list can repeat one long string cheaply);
- checks before the few operations that can blow up in one step (``'x' * n``, ``2 ** n``, huge format
  widths, ``replace``/``indent``/``wordwrap``/``join``/``expandtabs``/``dict.fromkeys``).

What remains possible is bounded: a template can spend about a second of CPU and, in one step, build a
value a few times the budget before it is refused.

The inputs are copied to plain JSON data first, so a template only ever sees dicts, lists, strings,
numbers, booleans and None (no caller objects with methods the sandbox would allow).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import lru_cache, wraps
from types import FrameType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace

from owlkit.errors import InvalidFile, OwlError, Refused, UsageError

MAX_OUTPUT_CHARS = 1 << 20  # 1 Mi characters, plus twice the input size (long prompts stay renderable)
MAX_STEPS = 500_000  # executed template lines (about a second); real chat templates use a few thousand
MAX_INT_ARG = 1 << 16  # widths and counts passed to filters and methods
MAX_TOJSON_INDENT = 64
MAX_INPUT_DEPTH = 64
_TEMPLATE_FILE = "<template>"  # the filename jinja gives code compiled by Environment.from_string
_FIX = "fix or replace the model's chat template"


class _Budget:
    """Per-render limits, shared by the hooks below through a thread-local slot."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.steps = 0


_local = threading.local()  # .budget: the limits of the render running on this thread (serving is threaded)


def _budget() -> _Budget:
    return getattr(_local, "budget", None) or _Budget(MAX_OUTPUT_CHARS)


def _refuse(what: str) -> Refused:
    return Refused(f"chat template refused: {what}; {_FIX}")


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, dict)) and len(value) > _budget().max_chars:
        raise _refuse(f"it built a value of {len(value):,} items (limit {_budget().max_chars:,})")
    return value


def _check_ints(args: Iterable[Any]) -> None:
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_INT_ARG:
            raise _refuse(f"argument {a} is larger than {MAX_INT_ARG}")


_BIG_WIDTH = re.compile(r"%[-#0 +]*(\*|\d{6,})|\{[^{}]*:[^{}]*\d{6,}")


def _check_format(fmt: Any) -> None:
    # "%9999999s" and "{:9999999}" allocate their width before anything else can look at the result.
    if isinstance(fmt, str) and _BIG_WIDTH.search(fmt):
        raise _refuse("a format width is too large")


def _estimate(kind: str, value: Any, args: tuple, kwargs: dict) -> int:
    """An upper bound of the output length of an amplifying string operation, before it runs."""
    n = len(value) if isinstance(value, str) else 0
    if kind == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        hits = value.count(old) if old else n + 1
        return n + hits * max(0, len(new) - len(old))
    if kind == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else int(width)
        return n + (value.count("\n") + 1) * pad
    if kind == "wordwrap":
        wrap = kwargs.get("wrapstring") or (args[2] if len(args) > 2 else None) or "\n"
        return n + (n + 1) * len(str(wrap))
    if kind == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        return n + value.count("\t") * int(size)
    return n


def _weight(value: Any, limit: int) -> int:
    """Characters ``value`` would print as, counted only until ``limit`` is passed. A list may hold the
    same long string a million times at the cost of a million references; printing or joining it is
    what costs the memory, so that is what is counted (cheaply: stops early, looks at nothing twice)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if not isinstance(value, (list, tuple)):
        return 8  # a number, bool, None or undefined prints short
    total = 2 * len(value)  # brackets and separators, roughly
    for item in value:
        if total > limit:
            break
        total += _weight(item, limit - total)
    return total


def _check_weight(value: Any) -> Any:
    limit = _budget().max_chars
    if isinstance(value, (list, tuple, dict)) and _weight(value, limit) > limit:
        raise _refuse(f"it built a collection that prints as more than {limit:,} characters")
    return _check_size(value)


def _join_fits(sep: str, items: list) -> bool:
    limit = _budget().max_chars
    return len(sep) * max(0, len(items) - 1) + _weight(items, limit) - 2 * len(items) <= limit


def _guard_filter(name: str, fn: Callable) -> Callable:
    """Wrap a filter with the checks above; functools.wraps keeps jinja's pass_context markers."""

    @wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        # Filters marked pass_context / pass_eval_context / pass_environment get that object first.
        values = args[1:] if hasattr(fn, "jinja_pass_arg") else args
        value, rest = (values[0], values[1:]) if values else (None, ())
        _check_ints([*rest, *kwargs.values()])
        amplifies = name in ("replace", "indent", "wordwrap") and isinstance(value, str)
        if amplifies and _estimate(name, value, tuple(rest), kwargs) > _budget().max_chars:
            raise _refuse(f"'{name}' would build too long a string")
        if name == "join" and value is not None and not isinstance(value, str):
            items = list(value)
            sep = rest[0] if rest else kwargs.get("d", "")
            if not _join_fits(str(sep), items):
                raise _refuse("'join' would build too long a string")
            args = tuple(items if a is value else a for a in args)
        return _check_size(fn(*args, **kwargs))

    return guarded


class _Namespace(Namespace):
    """``namespace()`` whose attributes cannot be dunders and stay within the size budget."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # same signature trick as jinja's Namespace
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for key, value in attrs.items():
            _Namespace._check(key, value)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name, value)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any, value: Any) -> None:
        if not isinstance(name, str) or name.startswith("_"):
            raise SecurityError(f"namespace attribute {name!r} is not allowed")
        _check_size(value)


class _DictMaker:
    """The ``dict`` global. jinja's default is the dict type itself; this exposes only building one."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return _check_size(dict(*args, **kwargs))

    def fromkeys(self, keys: Iterable[Any], value: Any = None) -> dict:
        keys = list(keys)
        if len(keys) * _weight(value, _budget().max_chars) > _budget().max_chars:
            raise _refuse("dict.fromkeys would build too large a dict")
        return _check_size(dict.fromkeys(keys, value))


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` (used by training templates): renders its body."""

    tags = {"generation"}  # noqa: RUF012 - jinja's Extension API declares it as a class attribute

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


class _ChatEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                repeats = isinstance(seq, (str, list, tuple)) and isinstance(times, int)
                if repeats and _weight(seq, _budget().max_chars) * max(times, 0) > _budget().max_chars:
                    raise _refuse("'*' would build too long a value")
        elif operator == "**" and isinstance(right, (int, float)) and abs(right) > 1024:
            raise _refuse(f"exponent {right} is too large")
        elif operator == "%":
            _check_format(left)
        result = super().call_binop(context, operator, left, right)
        return _check_weight(result) if operator == "+" else _check_size(result)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # jinja swaps str.format / format_map for a sandboxed wrapper when the attribute is read.
        owner = getattr(value, "__self__", None)
        if getattr(value, "__name__", "") in ("format", "format_map") and isinstance(owner, str):
            _check_format(owner)
        return super().wrap_str_format(value)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # Jinja's own signature (dunder names so templates may pass any keyword).
        if __obj is not __self.globals.get("range"):
            _check_ints([*args, *kwargs.values()])
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if (
                name in ("replace", "expandtabs")
                and _estimate(name, owner, args, kwargs) > _budget().max_chars
            ):
                raise _refuse(f"'{name}' would build too long a string")
            elif name == "join" and args:
                items = list(args[0])
                if not _join_fits(owner, items):
                    raise _refuse("'join' would build too long a string")
                args = (items, *args[1:])
        return _check_size(super().call(__context, __obj, *args, **kwargs))


def _raise_exception(message: Any) -> None:
    # Templates call this to reject their input ("roles must alternate user/assistant/...").
    raise UsageError(f"the chat template rejected the messages: {message}")


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: Any = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's built-in tojson escapes <, >, & and ' for HTML; chat templates want the JSON as is.
    if isinstance(indent, int) and indent > MAX_TOJSON_INDENT:
        raise _refuse(f"tojson indent {indent} is too large")
    if isinstance(indent, str) and len(indent) > MAX_TOJSON_INDENT:
        raise _refuse("tojson indent is too long")
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(str(fmt)[:256])


@lru_cache(maxsize=1)
def _environment() -> _ChatEnvironment:
    env = _ChatEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _GenerationTag])
    env.filters["tojson"] = _tojson
    env.filters = {name: _guard_filter(name, fn) for name, fn in env.filters.items()}
    env.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs; no chat template uses it
    env.globals.update(
        raise_exception=_raise_exception, strftime_now=_strftime_now, namespace=_Namespace, dict=_DictMaker()
    )
    return env


@lru_cache(maxsize=64)
def _compile(template: str) -> jinja2.Template:
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise InvalidFile(f"chat template: syntax error on line {e.lineno}: {e.message}; {_FIX}") from None
    except (jinja2.TemplateError, RecursionError, MemoryError) as e:
        raise InvalidFile(f"chat template: cannot be compiled ({type(e).__name__}: {e}); {_FIX}") from None


def _plain(value: Any, depth: int = 0) -> Any:
    """A copy made of JSON types only, so the template sees no caller objects."""
    if depth > MAX_INPUT_DEPTH:
        raise UsageError(f"chat messages nest deeper than {MAX_INPUT_DEPTH} levels; flatten them")
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, (str, int, float, bool)):  # subclasses (enums, numpy scalars...) as plain values
        return json.loads(json.dumps(value))
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    raise UsageError(
        f"chat messages must hold JSON data only (got a {type(value).__name__}); convert it first"
    )


def _input_chars(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False))


def _tracer(budget: _Budget) -> Callable:
    """A sys.settrace function counting the lines the template's own code executes."""

    def local(frame: FrameType, event: str, arg: Any) -> Callable:
        if event == "line":
            budget.steps += 1
            if budget.steps > MAX_STEPS:
                raise _refuse(f"it ran more than {MAX_STEPS:,} steps (an endless or huge loop)")
            for value in frame.f_locals.values():
                if isinstance(value, (str, list, tuple, dict)) and len(value) > budget.max_chars:
                    raise _refuse(f"it built a value of {len(value):,} items (limit {budget.max_chars:,})")
        return local

    def global_(frame: FrameType, event: str, arg: Any) -> Callable | None:
        return local if frame.f_code.co_filename == _TEMPLATE_FILE else None

    return global_


def render_chat(
    template: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    tools: list[dict] | None = None,
    **extra: Any,
) -> str:
    """Render a chat template (Jinja text) for ``messages`` the way transformers does, in the sandbox.

    ``extra`` holds further template variables (other special tokens, ``documents``, flags such as
    ``enable_thinking``). Raises InvalidFile for a broken template, UsageError when the template rejects
    the messages (``raise_exception``), Refused when it tries to escape the sandbox or to run or grow
    without bound.
    """
    variables = _plain(
        {
            **extra,
            "messages": messages,
            "tools": tools,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": bos_token,
            "eos_token": eos_token,
        }
    )
    compiled = _compile(template)
    budget = _Budget(MAX_OUTPUT_CHARS + 2 * _input_chars(variables))
    previous_trace = sys.gettrace()
    _local.budget = budget
    pieces: list[str] = []
    size = 0
    try:
        sys.settrace(_tracer(budget))
        for piece in compiled.generate(**variables):
            size += len(piece)
            if size > budget.max_chars:
                raise _refuse(f"its output exceeds {budget.max_chars:,} characters")
            pieces.append(piece)
    except OwlError:
        raise
    except SecurityError as e:
        raise Refused(
            f"chat template refused: it tried something the sandbox forbids ({e}); {_FIX}"
        ) from None
    except (RecursionError, MemoryError) as e:
        raise _refuse(f"it exhausted {'the stack' if isinstance(e, RecursionError) else 'memory'}") from None
    except Exception as e:  # TemplateError, TypeError, ZeroDivisionError... raised by the template's code
        raise InvalidFile(
            f"chat template: failed while rendering ({type(e).__name__}: {e}); {_FIX}"
        ) from None
    finally:
        sys.settrace(previous_trace)
        _local.budget = None
    return "".join(pieces)
