"""Request bodies of the OpenAI-compatible API, validated by pydantic.

Fields follow OpenAI's API reference and what lm-evaluation-harness's ``local-completions`` sends.
Unknown fields are ignored (clients send ``user`` and vendor extras); known fields that owl serve
cannot honour (penalties, logit_bias, tools, suffix) are refused with 400 rather than silently
dropped, so a caller never gets output made under other settings than the ones it asked for.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 64  # choices per request: each is one sequence in the backend's queue
MAX_STOP = 16

# A prompt after validation: text, or token ids used as they are.
Prompt = str | list[int]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """Fields shared by completions and chat completions."""

    model: str | None = Field(None, max_length=1024)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are accepted, not {len(stops)}")
        return [s for s in stops if s]  # an empty stop string would end every output before it starts

    @model_validator(mode="after")
    def _unsupported(self) -> _Sampling:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported by owl serve: leave it out or set it to 0")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported by owl serve: leave it out")
        return self

    @property
    def stops(self) -> list[str]:
        return list(self.stop or [])  # a list once validated; None when left out

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def _prompts(value: Any) -> list[Prompt]:
    """OpenAI's four prompt forms as a list of prompts: str, [str], [int] and [[int]]."""
    shape = "prompt must be a string, a list of strings, a list of token ids or a list of such lists"

    def ids(v: list) -> list[int]:
        if not all(type(t) is int for t in v):
            raise ValueError(shape)
        if any(t < 0 for t in v):
            raise ValueError("token ids in prompt must be >= 0")
        if not v:
            raise ValueError("a token-id prompt must hold at least one id")
        return list(v)

    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise ValueError(
            shape if not isinstance(value, list) else "prompt is an empty list: send at least one"
        )
    if all(isinstance(v, str) for v in value):
        return list(value)
    if all(type(v) is int for v in value):
        return [ids(value)]
    if all(isinstance(v, list) for v in value):
        return [ids(v) for v in value]
    raise ValueError(shape)


class CompletionRequest(_Sampling):
    prompt: list[Prompt]
    max_tokens: int | None = Field(16, ge=0)  # null: the rest of the context (as vLLM)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, v: Any) -> list[Prompt]:
        return _prompts(v)

    @model_validator(mode="after")
    def _completion_only(self) -> CompletionRequest:
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported by owl serve: leave it out")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of is not supported by owl serve: leave it out (n gives several choices)")
        return self


class ChatCompletionRequest(_Sampling):
    messages: list[dict[str, Any]] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    # Extra template variables (as vLLM's chat_template_kwargs), e.g. enable_thinking.
    chat_template_kwargs: dict[str, Any] | None = None

    @field_validator("messages")
    @classmethod
    def _messages(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for i, m in enumerate(messages):
            role = m.get("role")
            if not isinstance(role, str) or not role:
                raise ValueError(f"messages[{i}] needs a 'role' string (system, user, assistant)")
            content = m.get("content")
            if isinstance(content, list):  # content parts: only text can reach a text model
                texts = []
                for part in content:
                    if (
                        not isinstance(part, dict)
                        or part.get("type") != "text"
                        or not isinstance(part.get("text"), str)
                    ):
                        raise ValueError(f"messages[{i}].content: only text parts are supported by owl serve")
                    texts.append(part["text"])
                content = "".join(texts)
            elif content is not None and not isinstance(content, str):
                raise ValueError(f"messages[{i}].content must be a string or a list of text parts")
            out.append({**m, "content": content})
        return out

    @model_validator(mode="after")
    def _chat_only(self) -> ChatCompletionRequest:
        if self.tools:
            raise ValueError("tools are not supported by owl serve: leave them out")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise ValueError("response_format other than text is not supported by owl serve")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @property
    def max_new(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class LoadLoraRequest(_Body):
    lora_name: str = Field(..., min_length=1, max_length=256, pattern=r"^\S+$")
    lora_path: str = Field(..., min_length=1, max_length=4096)


class UnloadLoraRequest(_Body):
    lora_name: str = Field(..., min_length=1, max_length=256)
