"""`owl serve`'s HTTP layer: an OpenAI-compatible API on FastAPI, run by uvicorn.

Routes: ``GET /v1/models`` (bases, and adapters with ``parent``/``root`` as vLLM lists them, each with
its license and terms verdict), ``GET /v1/models/{id}``, ``POST /v1/completions`` (the legacy API as
lm-evaluation-harness's ``local-completions`` uses it: token-id prompts, ``echo`` + ``logprobs``),
``POST /v1/chat/completions`` (the model's chat template in the sandbox), ``POST /v1/load_lora_adapter``,
``POST /v1/unload_lora_adapter`` and ``GET /health``. Streams are Server-Sent Events framed exactly as the
``openai`` client parses them.

Threads: the backend's text calls (encode, decode, token_text, chat_template) run on the event loop's
one thread; generation runs on the backend's worker thread and comes back through
:class:`~owlkit.serve.generation.Generation`. Three slow things run in the thread pool so streams keep
flowing: chat-template rendering (bounded, but up to about a second of CPU), and adapter loading and
unloading (one at a time, under a lock; they read weights or wait for running requests).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from owlkit.backends.base import Sampling, TokenLogprob
from owlkit.errors import NotFound, OwlError, UsageError
from owlkit.serve.errors import APIError, bad_request, from_owl
from owlkit.serve.generation import Generation, Update
from owlkit.serve.registry import Served, Server
from owlkit.serve.schemas import ChatCompletionRequest, CompletionRequest, LoadLoraRequest, UnloadLoraRequest

if TYPE_CHECKING:
    from owlkit.backends.base import Backend

_RESERVED_TEMPLATE_VARS = frozenset({"template", "messages", "add_generation_prompt", "tools"})


def create_app(server: Server) -> FastAPI:
    """The FastAPI application serving ``server``'s models."""
    app = FastAPI(title="owl serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    if server.api_key:
        app.add_middleware(_KeyCheck, key=server.api_key)
    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": len(server.models)}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_entry(m) for m in list(server.models.values())]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        return _model_entry(server.resolve(model_id))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await _completions(server, body, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        return await _chat(server, body, request)

    # Loading and unloading run one at a time, in the thread pool: reading an adapter's weights, or
    # waiting for the requests that use one to finish, must not stall the streams being served.
    admin = asyncio.Lock()

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(body: LoadLoraRequest) -> dict[str, Any]:
        async with admin:
            ref = body.lora_path
            try:
                server.store.find(ref)
            except NotFound:
                if not _looks_like_path(ref, server.allow_adapter_paths):
                    raise
                if not server.allow_adapter_paths:  # the same answer whether or not the path exists
                    raise bad_request(
                        f"lora_path {ref!r} is not a stored adapter, and this server loads adapters from "
                        "paths only when started with --allow-adapter-paths; `owl import` it and pass its name",
                        param="lora_path",
                    ) from None
                ref = await run_in_threadpool(server.import_adapter_path, ref, body.lora_name)
            served = await run_in_threadpool(server.add_adapter, ref, body.lora_name)
        server.stats["adapters_loaded"] += 1
        return {**_model_entry(served), "warnings": served.warnings}

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(body: UnloadLoraRequest) -> dict[str, Any]:
        async with admin:
            served = await run_in_threadpool(server.remove_adapter, body.lora_name)
        return {"id": served.name, "object": "model", "deleted": True}

    return app


# ----- errors -------------------------------------------------------------------------------------------
def _error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError) -> JSONResponse:
        return _error_response(e)

    @app.exception_handler(OwlError)
    async def owl_error(_: Request, e: OwlError) -> JSONResponse:
        return _error_response(from_owl(e))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        return _error_response(_validation_message(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return _error_response(APIError(e.status_code, str(e.detail), type=kind, headers=e.headers))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, e: Exception) -> JSONResponse:
        msg = f"internal error ({type(e).__name__}): {e}; this is a bug in owl serve, please report it"
        return _error_response(APIError(500, msg, type="server_error"))


def _validation_message(errors: Any) -> APIError:
    """FastAPI's validation errors as one 400 naming the field, the way OpenAI reports them."""
    errors = list(errors)
    if not errors:
        return bad_request("the request body is invalid")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        msg = "this field is required"
    elif first.get("type") == "json_invalid":
        msg, field = "the request body is not valid JSON", None
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return bad_request(f"{field}: {msg}{more}" if field else f"{msg}{more}", param=field)


class _KeyCheck:
    """Requires ``Authorization: Bearer KEY`` on /v1 routes (a pure ASGI middleware: no buffering of
    streamed responses, checked before the body is read)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            auth = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                what = "incorrect API key" if auth else "missing API key"
                err = APIError(401, f"{what}: send the server's --api-key as 'Authorization: Bearer KEY'",
                               code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
                await _error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ----- models ------------------------------------------------------------------------------------------
def _model_entry(m: Served) -> dict[str, Any]:
    return {
        "id": m.name,
        "object": "model",
        "created": m.created,
        "owned_by": "owlkit",
        "root": m.record.name,
        "parent": m.parent,
        "max_model_len": m.backend.context_length,
        "kind": m.record.manifest.kind,
        "digest": m.record.digest,
        "license": m.record.manifest.license,
        "terms": m.terms,
    }


def _looks_like_path(ref: str, allowed: bool) -> bool:
    # Store names may hold one "/" (org/name): only an explicit path form, or an existing path on a
    # server that allows paths, is read as a path.
    return ref.startswith((".", "~", "/", os.sep)) or (allowed and os.path.exists(ref))


# ----- shared request plumbing -------------------------------------------------------------------------
def _check_context(backend: Backend, n_prompt: int, max_new: int | None, param: str) -> int:
    """The completion budget (the rest of the context when not given); 400 naming both counts when the
    request cannot fit."""
    n_ctx = backend.context_length
    wanted = max(n_ctx - n_prompt, 0) if max_new is None else max_new
    if n_prompt + wanted > n_ctx:
        raise APIError(
            400,
            f"This model's maximum context length is {n_ctx} tokens; the request needs {n_prompt + wanted} "
            f"({n_prompt} prompt + {wanted} completion): shorten the prompt or lower max_tokens",
            param=param,
            code="context_length_exceeded",
        )
    return wanted


def _samplings(
    body: Any, budgets: list[int], logprobs: int | None, echo_logprobs: bool
) -> list[list[Sampling]]:
    out = []
    for budget in budgets:
        per_prompt = []
        for j in range(body.n):
            s = Sampling(
                max_tokens=budget,
                temperature=1.0 if body.temperature is None else body.temperature,
                top_p=1.0 if body.top_p is None else body.top_p,
                seed=None if body.seed is None else body.seed + j,  # n samples of one seed still differ
                logprobs=logprobs,
                echo_logprobs=echo_logprobs,
            )
            s.check()
            per_prompt.append(s)
        out.append(per_prompt)
    return out


def _start(gen: Generation, server: Server) -> None:
    server.stats["requests"] += 1
    try:
        gen.start()
    except OwlError as e:
        server.stats["refused_" + type(e).__name__] += 1
        raise


async def _watch_disconnect(request: Request, gen: Generation, server: Server) -> None:
    """For one-shot answers: cancel the generation when the client goes away before it is done."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            server.stats["disconnects"] += 1
            gen.cancel()
            return


async def _collect(gen: Generation, request: Request, server: Server) -> list[list[Update]]:
    watcher = asyncio.ensure_future(_watch_disconnect(request, gen, server))
    per_choice: list[list[Update]] = [[] for _ in gen.choices]
    try:
        async for up in gen.updates():
            per_choice[up.index].append(up)
    finally:
        watcher.cancel()
        gen.cancel()
    for ups in per_choice:
        _raise_failure(ups[-1])
    return per_choice


def _raise_failure(up: Update) -> None:
    if up.finish == "error":
        if isinstance(up.error, OwlError):
            raise from_owl(up.error)
        raise APIError(500, f"generation failed: {up.error}", type="server_error")
    if up.finish == "abort":
        raise APIError(503, "the request was cancelled: the server is shutting down", type="server_error")


def _failure_event(up: Update) -> str | None:
    try:
        _raise_failure(up)
    except APIError as e:
        return _sse(e.body())
    return None


def _finish_reason(reason: str | None) -> str | None:
    return reason if reason in (None, "stop", "length") else "stop"


def _usage(gen: Generation, n_prompt_tokens: int) -> dict[str, int]:
    completion = sum(len(c.tokens) for c in gen.choices)
    return {
        "prompt_tokens": n_prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": n_prompt_tokens + completion,
    }


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _guarded(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Once a stream has started its status is sent: a failure can only be reported as an event (the
    ``openai`` client raises an APIError for a chunk with an ``error`` key)."""
    try:
        async for event in events:
            yield event
    except OwlError as e:
        yield _sse(from_owl(e).body())
        yield "data: [DONE]\n\n"
    except Exception as e:
        err = APIError(
            500, f"internal error ({type(e).__name__}): {e}; please report it", type="server_error"
        )
        yield _sse(err.body())
        yield "data: [DONE]\n\n"


class _EventStream(StreamingResponse):
    """``text/event-stream`` exactly (no charset appended) that cancels its generation however the
    response ends: finished, client gone (Starlette cancels the body iterator), or an error."""

    def __init__(self, events: AsyncIterator[str], gen: Generation, server: Server) -> None:
        super().__init__(
            _guarded(events), headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                             "X-Accel-Buffering": "no"},
        )  # fmt: skip
        self.gen, self.server, self.done = gen, server, False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if any(c.finish is None for c in self.gen.choices):
                self.server.stats["disconnects"] += 1
            self.gen.cancel()


class _Tokens:
    """Token texts for logprobs, looked up once per request."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cache: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        if token not in self.cache:
            try:
                self.cache[token] = self.backend.token_text(token)
            except Exception:  # an id the tokenizer has no text for (a model's padded vocabulary)
                self.cache[token] = f"<|id:{token}|>"
        return self.cache[token]


# ----- /v1/completions ---------------------------------------------------------------------------------
def _check_capacity(backend: Backend, sequences: int) -> None:
    """A request with more sequences than the backend ever holds at once could only be refused later
    (and after encoding every prompt): say so now, with the fix."""
    most = backend.options.max_batch + backend.options.max_queue
    if sequences > most:
        raise bad_request(
            f"this request asks for {sequences} sequences (prompts x n); this server holds at most {most} "
            "at once: split it into smaller requests",
            param="prompt",
        )


async def _completions(server: Server, body: CompletionRequest, request: Request) -> Any:
    served = server.resolve(body.model)
    backend = served.backend
    _check_capacity(backend, len(body.prompt) * body.n)
    prompts: list[list[int]] = []
    texts: list[str] = []
    for p in body.prompt:
        ids = backend.encode(p, special=True) if isinstance(p, str) else list(p)
        if not ids:
            raise bad_request("prompt encodes to no tokens: send some text or token ids", param="prompt")
        prompts.append(ids)
        texts.append(p if isinstance(p, str) else (backend.decode(ids) if body.echo else ""))
    budgets = [_check_context(backend, len(ids), body.max_tokens, "max_tokens") for ids in prompts]
    echo_logprobs = body.echo and body.logprobs is not None
    gen = Generation(backend, served.adapter, prompts, _samplings(body, budgets, body.logprobs, echo_logprobs),
                     body.stops)  # fmt: skip
    _start(gen, server)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    tokens = _Tokens(backend)
    n_prompt = sum(len(p) for p in prompts)
    logs = [_CompletionLogprobs(tokens) if body.logprobs is not None else None for _ in gen.choices]

    def prefix(index: int, up: Update) -> tuple[str, dict | None]:
        """The choice's text and logprobs for this update, with the echoed prompt on its first."""
        text = up.text
        log = logs[index]
        if up.first and body.echo:
            text = texts[index // body.n] + text
            if log is not None and up.prompt_logprobs is not None:
                log.add_prompt(prompts[index // body.n], up.prompt_logprobs)
        if log is not None:
            log.add(up.logprobs)
        return text, log.take() if log is not None else None

    if body.stream:

        async def events() -> AsyncIterator[str]:
            base = {"id": rid, "object": "text_completion", "created": created, "model": served.name}
            extra = {"usage": None} if body.include_usage else {}
            async for up in gen.updates():
                if failure := _failure_event(up):
                    yield failure
                    break
                text, lp = prefix(up.index, up)
                if not text and not (lp and lp["tokens"]) and up.finish is None:
                    continue
                choice = {"index": up.index, "text": text, "logprobs": lp,
                          "finish_reason": _finish_reason(up.finish)}  # fmt: skip
                yield _sse({**base, "choices": [choice], **extra})
            else:
                if body.include_usage:
                    yield _sse({**base, "choices": [], "usage": _usage(gen, n_prompt)})
            yield "data: [DONE]\n\n"

        return _EventStream(events(), gen, server)

    per_choice = await _collect(gen, request, server)
    choices = []
    for index, ups in enumerate(per_choice):
        pieces = [prefix(index, up)[0] for up in ups]
        log = logs[index]
        choices.append(
            {"index": index, "text": "".join(pieces), "logprobs": log.whole() if log else None,
             "finish_reason": _finish_reason(ups[-1].finish)}
        )  # fmt: skip
    return {"id": rid, "object": "text_completion", "created": created, "model": served.name,
            "choices": choices, "usage": _usage(gen, n_prompt)}  # fmt: skip


class _CompletionLogprobs:
    """The legacy logprobs object of one choice: tokens, token_logprobs, top_logprobs, text_offset.
    ``take`` returns what was added since the last take (a stream chunk), ``whole`` everything."""

    KEYS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")

    def __init__(self, tokens: _Tokens) -> None:
        self.tokens = tokens
        self.all: dict[str, list] = {k: [] for k in self.KEYS}
        self.taken = 0
        self.offset = 0

    def _push(self, token: int, logprob: float | None, top: dict[str, float] | None) -> None:
        text = self.tokens(token)
        for key, value in zip(self.KEYS, (text, logprob, top, self.offset), strict=True):
            self.all[key].append(value)
        self.offset += len(text)

    def _top(self, top: list[tuple[int, float]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for token, lp in top:  # most likely first: a text shared by two ids keeps the larger logprob
            out.setdefault(self.tokens(token), lp)
        return out

    def add_prompt(self, ids: list[int], logprobs: list[TokenLogprob | None]) -> None:
        for token, lp in zip(ids, logprobs, strict=False):
            if lp is None:
                self._push(token, None, None)
            else:
                self._push(token, lp.logprob, self._top(lp.top))

    def add(self, logprobs: list[TokenLogprob]) -> None:
        for lp in logprobs:
            self._push(lp.token, lp.logprob, self._top(lp.top))

    def take(self) -> dict[str, list]:
        part = {k: v[self.taken :] for k, v in self.all.items()}
        self.taken = len(self.all["tokens"])
        return part

    def whole(self) -> dict[str, list]:
        return self.all


# ----- /v1/chat/completions ----------------------------------------------------------------------------
async def _chat_prompt(served: Served, body: ChatCompletionRequest) -> list[int]:
    from owlkit.runtime.chat import render_chat

    template, specials = served.backend.chat_template(served.adapter)
    if not template:
        raise bad_request(
            f"{served.name} has no chat template: use /v1/completions with your own prompt", param="model"
        )
    extra = {k: v for k, v in (body.chat_template_kwargs or {}).items() if k not in _RESERVED_TEMPLATE_VARS}
    variables = {**extra, **specials}
    try:
        text = await run_in_threadpool(
            lambda: render_chat(template, body.messages, add_generation_prompt=True, **variables)
        )
    except OwlError as e:
        err = from_owl(e, param="messages")
        err.message = f"{served.name}: {err.message}"
        raise err from None
    except Exception as e:  # anything else a template's own code raised: still the template's fault
        raise bad_request(
            f"{served.name}: chat template failed ({type(e).__name__}: {e})", param="messages"
        ) from None
    return served.backend.encode(text, special=False)


async def _chat(server: Server, body: ChatCompletionRequest, request: Request) -> Any:
    served = server.resolve(body.model)
    backend = served.backend
    _check_capacity(backend, body.n)
    prompt = await _chat_prompt(served, body)
    if not prompt:
        raise bad_request("the messages render to an empty prompt", param="messages")
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    budget = _check_context(backend, len(prompt), body.max_new, param)
    if budget == 0:
        _check_context(backend, len(prompt), 1, param)  # a chat answer needs room for one token
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    gen = Generation(
        backend, served.adapter, [prompt], _samplings(body, [budget], logprobs, False), body.stops
    )
    _start(gen, server)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    tokens = _Tokens(backend)

    def chat_logprobs(up: Update) -> dict | None:
        if logprobs is None:
            return None
        return {"content": [_chat_logprob(tokens, lp) for lp in up.logprobs]}

    if body.stream:

        async def events() -> AsyncIterator[str]:
            base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": served.name}
            extra = {"usage": None} if body.include_usage else {}

            def chunk(index: int, delta: dict, finish: str | None = None, lp: dict | None = None) -> str:
                choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
                return _sse({**base, "choices": [choice], **extra})

            for choice in gen.choices:
                yield chunk(choice.index, {"role": "assistant", "content": ""})
            async for up in gen.updates():
                if failure := _failure_event(up):
                    yield failure
                    break
                lp = chat_logprobs(up)
                if up.text or (lp and lp["content"]):
                    yield chunk(up.index, {"content": up.text}, lp=lp)
                if up.finish is not None:
                    yield chunk(up.index, {}, _finish_reason(up.finish))
            else:
                if body.include_usage:
                    yield _sse({**base, "choices": [], "usage": _usage(gen, len(prompt))})
            yield "data: [DONE]\n\n"

        return _EventStream(events(), gen, server)

    per_choice = await _collect(gen, request, server)
    choices = []
    for index, ups in enumerate(per_choice):
        content = [entry for up in ups for entry in (chat_logprobs(up) or {}).get("content", [])]
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": "".join(up.text for up in ups)},
                "logprobs": {"content": content} if logprobs is not None else None,
                "finish_reason": _finish_reason(ups[-1].finish),
            }
        )
    return {"id": rid, "object": "chat.completion", "created": created, "model": served.name,
            "choices": choices, "usage": _usage(gen, len(prompt))}  # fmt: skip


def _chat_logprob(tokens: _Tokens, lp: TokenLogprob) -> dict[str, Any]:
    def entry(token: int, logprob: float) -> dict[str, Any]:
        text = tokens(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {**entry(lp.token, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]}


# ----- running ---------------------------------------------------------------------------------------
def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the server starts so a taken port is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port} ({e.strerror or e}): pick another --port or --host"
        ) from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(server: Server, **config: Any) -> Any:
    import uvicorn

    settings = {"log_level": "warning", "access_log": False, "lifespan": "off", "timeout_graceful_shutdown": 5,
                **config}  # fmt: skip
    return uvicorn.Server(uvicorn.Config(create_app(server), **settings))


def serve(server: Server, sock: socket.socket) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM), in this thread; the CLI's main loop."""
    _uvicorn_server(server).run(sockets=[sock])


def run_in_thread(server: Server, host: str = "127.0.0.1", port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serve ``server`` on a background thread (port 0: a free port); returns (base URL, stop). ``stop()``
    stops the HTTP server only; close the Server itself after it."""
    sock = bind_socket(host, port)
    return url_of(sock), start_in_thread(server, sock)


def start_in_thread(server: Server, sock: socket.socket) -> Callable[[], None]:
    """Serve ``server`` on the bound ``sock`` from a background thread, once it answers; returns
    ``stop()``, which stops the HTTP server and closes the socket (the Server stays open)."""
    userver = _uvicorn_server(server)
    thread = threading.Thread(target=userver.run, kwargs={"sockets": [sock]}, name="owl-serve", daemon=True)
    thread.start()
    url, deadline = url_of(sock), time.monotonic() + 30
    while not userver.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            userver.should_exit = True
            sock.close()
            raise OwlError(f"the server on {url} did not start")
        time.sleep(0.01)

    def stop() -> None:
        userver.should_exit = True
        thread.join(10)
        if thread.is_alive():  # connections that will not close: drop them
            userver.force_exit = True
            thread.join(10)
        sock.close()

    return stop
