"""Data-parallel ``owl tune`` over N processes with torch.distributed (DDP): gloo on CPU, nccl on CUDA.

Two ways in, one code path. ``owl tune --nproc N`` makes :func:`launch` start N children of
``python -m owlkit.adapt.rank SPEC`` on this machine (rendezvous on 127.0.0.1 and a free port, gloo
bound to the loopback interface); under ``torchrun`` the environment already names RANK, WORLD_SIZE
and LOCAL_RANK and each process joins that group instead. Either way each rank runs
``owlkit.adapt.train.train`` with a :class:`Group`, which:

- keeps the global batch: every rank builds the same seeded micro-batches (the whole global batch)
  and trains on its contiguous slice of ``batch_size / N`` sequences; a rank whose slice is empty (the
  short last micro-batch of an epoch) runs one fully-masked row, adding zero loss and zero gradient,
  so every rank takes part in every all-reduce;
- averages gradients with DDP (``no_sync`` for all but the last micro-batch of a step); the train
  loop scales each rank's loss by N over the step's global label count, so the average is exactly the
  one-process token-weighted mean up to float summation order;
- all-reduces the loss sums, so the logged curve is the global one (label and token counts need no
  communication: every rank sees the whole global batch);
- reseeds dropout per (seed, step, rank), so ranks draw different masks and a resumed run draws the
  same ones as an uninterrupted run.

Only rank 0 writes checkpoints, the output folder and (in the recipe) the store artifact. Children
report a result or a one-line error through files in a private run folder; the first failure stops
the others and fails the command naming its rank.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlkit import errors
from owlkit.errors import OwlError, UsageError

if TYPE_CHECKING:
    import torch

    from owlkit.adapt.params import TrainResult, TuneParams

_ENV_THREADS = "OWL_DDP_THREADS"  # the launcher's thread count, split over the ranks
_ENV_PROGRESS = "OWL_DDP_PROGRESS"  # rank 0 appends its per-step log entries here (JSON lines)
_ENV_TIMEOUT = "OWL_DDP_TIMEOUT_S"  # rendezvous and collective timeout (default 30 minutes)
_GRACE_S = 60.0  # once one rank has exited, how long the others get before they are stopped


def launched_world() -> int:
    """WORLD_SIZE when this process was started as one rank of a group (torchrun or :func:`launch`)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a whole number") from None


def launched_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


@dataclass
class Group:
    """This process's place in the data-parallel group, and the few collectives the loop needs."""

    rank: int
    world_size: int
    local_rank: int
    per_rank: int
    """Sequences of each micro-batch this rank trains on (batch_size / world_size)."""
    device: Any
    threads_total: int
    """The launcher's thread count; each rank uses max(1, threads_total // world_size)."""
    owned: bool
    """Whether this module initialised the process group (and so tears it down)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's contiguous slice of a global micro-batch; when it is empty, the batch's first
        row with every label ignored (zero loss, zero gradient, but the same collectives)."""
        from owlkit.adapt.data import IGNORE

        rows = batch["input_ids"].shape[0]
        lo = min(self.rank * self.per_rank, rows)
        hi = min(lo + self.per_rank, rows)
        out = {}
        for key, value in batch.items():
            if key == "n_tokens":  # a count for the log, not a model input
                out[key] = value
            elif lo < hi:
                out[key] = value[lo:hi].to(self.device)
            else:
                out[key] = value[:1].to(self.device)
        if lo == hi:
            out["labels"] = out["labels"].clone().fill_(IGNORE)
        return out

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64, so counts and loss sums lose nothing on the way)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def wrap(self, model: Any) -> Any:
        """DDP around a module whose forward is the loop's summed loss, so the gradient hooks fire."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.type == "cuda" else None
        # Buffers (rotary tables) are identical on every rank by construction: no per-step broadcast.
        return DistributedDataParallel(_loss_module_class()(model), device_ids=ids, broadcast_buffers=False)

    def sync(self, ddp_model: Any, *, last: bool) -> AbstractContextManager[Any]:
        """All-reduce gradients only on a step's last micro-batch."""
        return nullcontext() if last else ddp_model.no_sync()

    def reseed(self, seed: int, step: int) -> None:
        """Dropout randomness that differs between ranks and depends only on (seed, step, rank)."""
        import torch

        key = hashlib.sha256(f"owl-ddp:{seed}:{step}:{self.rank}".encode()).digest()
        torch.manual_seed(int.from_bytes(key[:8], "big") >> 1)

    def close(self) -> None:
        import torch.distributed as dist

        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


@functools.cache
def _loss_module_class() -> type:
    """``LossModule(model)(batch)`` is ``loss_sum(model, batch)`` as a module DDP can wrap (made on
    first use: torch is imported lazily)."""
    import torch

    from owlkit.adapt.loss import loss_sum

    class LossModule(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
            return loss_sum(self.model, batch)

    return LossModule


def join(params: TuneParams) -> Group | None:
    """Join the group this process was started in (None when it runs alone): checks the world size
    against ``params.nproc``, pins this rank's threads, and initialises torch.distributed."""
    import torch
    import torch.distributed as dist

    world = launched_world()
    if world <= 1:
        return None
    if params.nproc != world:
        raise UsageError(
            f"--nproc {params.nproc}: this process is one of WORLD_SIZE={world} (torchrun); "
            f"pass --nproc {world} or leave it out"
        )
    rank, local_rank = launched_rank(), int(os.environ.get("LOCAL_RANK", "0") or 0)
    threads_total = int(os.environ.get(_ENV_THREADS) or torch.get_num_threads())
    torch.set_num_threads(max(1, threads_total // world))
    cuda = _one_gpu_each(int(os.environ.get("LOCAL_WORLD_SIZE") or world))
    if cuda:
        # Deterministic cuBLAS needs a fixed workspace, chosen before the first handle is made.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    owned = not dist.is_initialized()
    if owned:
        timeout = timedelta(seconds=float(os.environ.get(_ENV_TIMEOUT) or 1800))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return Group(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        per_rank=params.batch_size // world,
        device=device,
        threads_total=threads_total,
        owned=owned,
    )


def _one_gpu_each(local_ranks: int) -> bool:
    """nccl and a GPU per rank when there are enough GPUs on this machine; else gloo on the CPU (two
    ranks cannot share one GPU under nccl)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() >= local_ranks


# ---------------------------------------------------------------- launcher (the parent process)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback_name() -> str | None:
    names = [name for _, name in socket.if_nameindex()]
    return next((n for n in ("lo", "lo0") if n in names), None)


def launch(
    base_dir: Path,
    data_path: Path,
    data_format: str,
    params: TuneParams,
    out_dir: Path,
    *,
    work_dir: Path,
    base_ref: str,
    resume: bool,
    progress: Callable[[dict], None] | None,
    _stop_after: int | None,
) -> TrainResult:
    """Run :func:`owlkit.adapt.train.train` in ``params.nproc`` local processes; rank 0's result."""
    import torch

    from owlkit.adapt.params import TrainResult

    n = params.nproc
    with tempfile.TemporaryDirectory(prefix="owl-ddp-") as tmp:
        run = Path(tmp)
        spec = {
            "base_dir": str(base_dir),
            "data_path": str(data_path),
            "data_format": data_format,
            "params": params.as_dict(),
            "out_dir": str(out_dir),
            "work_dir": str(work_dir),
            "base_ref": base_ref,
            "resume": resume,
            "stop_after": _stop_after,
        }
        (run / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "WORLD_SIZE": str(n),
            _ENV_THREADS: str(torch.get_num_threads()),
            # each rank's share, before torch starts its thread pool
            "OMP_NUM_THREADS": str(max(1, torch.get_num_threads() // n)),
        }
        if (lo := _loopback_name()) and not _one_gpu_each(n):
            env.setdefault("GLOO_SOCKET_IFNAME", lo)  # gloo's connections stay on this machine
        procs = []
        try:
            for rank in range(n):
                rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(n)}
                if rank == 0:
                    rank_env[_ENV_PROGRESS] = str(run / "progress.jsonl")
                log = open(run / f"rank{rank}.log", "wb")  # noqa: SIM115 - closed with the process
                procs.append(
                    (
                        subprocess.Popen(
                            [sys.executable, "-m", "owlkit.adapt.rank", str(run / "spec.json")],
                            env=rank_env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        ),
                        log,
                    )
                )
            _wait([p for p, _ in procs], run, progress)
        finally:
            for p, log in procs:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
                log.close()
        data = json.loads((run / "result.json").read_text(encoding="utf-8"))
    return TrainResult(**data)


def _wait(procs: list[subprocess.Popen], run: Path, progress: Callable[[dict], None] | None) -> None:
    """Until every rank has exited: relay rank 0's progress; the first failure fails the run."""
    lines = _progress_lines(run / "progress.jsonl")
    first_exit: float | None = None
    while True:
        for entry in lines:
            if progress is not None:
                progress(entry)
        codes = [p.poll() for p in procs]
        failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            raise _rank_error(run, failed)
        if all(c == 0 for c in codes):
            for entry in lines:  # the last steps' entries
                if progress is not None:
                    progress(entry)
            if not (run / "result.json").is_file():
                raise OwlError("rank 0 exited without a result; run again with --nproc 1 to see why")
            return
        if any(c is not None for c in codes):
            first_exit = first_exit or time.monotonic()
            if time.monotonic() - first_exit > _GRACE_S:
                late = [r for r, c in enumerate(codes) if c is None]
                raise OwlError(f"rank {late[0]}: still running {_GRACE_S:.0f}s after the others finished")
        time.sleep(0.1)


class _progress_lines:  # an iterable, named like a function
    """The complete JSON lines appended to a file since the last iteration."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def __iter__(self) -> Iterator[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        for line in chunk[:end].splitlines():
            if line.strip():
                yield json.loads(line)


def _rank_error(run: Path, failed: list[int]) -> OwlError:
    """One line naming the failing rank: an owlkit error a rank reported (same class, so the same exit
    code) before a crash, a crash before a rank stopped because a peer went away."""
    reports = {}
    for rank in failed:
        path = run / f"error{rank}.json"
        if path.is_file():
            reports[rank] = json.loads(path.read_text(encoding="utf-8"))
    owl = [r for r in failed if reports.get(r, {}).get("owl")]
    rank = (owl or [r for r in failed if r in reports] or failed)[0]
    if rank in reports:
        cls = getattr(errors, reports[rank]["type"], OwlError)
        if not (isinstance(cls, type) and issubclass(cls, OwlError)):
            cls = OwlError
        return cls(f"rank {rank}: {reports[rank]['message']}")
    tail = [ln for ln in (run / f"rank{rank}.log").read_text(errors="replace").splitlines() if ln.strip()]
    return OwlError(f"rank {rank}: crashed: {tail[-1] if tail else 'no output'}")


# ---------------------------------------------------------------- one rank (the child process)


def run_rank(argv: list[str], train: Callable[..., Any]) -> int:
    """One rank of :func:`launch` (``python -m owlkit.adapt.rank SPEC``): ``train`` with the spec's
    arguments; rank 0 writes the result where :func:`launch` reads it, any rank a one-line error."""
    run = Path(argv[0]).parent
    rank = launched_rank()
    try:
        from owlkit.adapt.params import TuneParams

        spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        progress_path = os.environ.get(_ENV_PROGRESS)

        def on_step(entry: dict) -> None:
            assert progress_path is not None
            with open(progress_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

        result = train(
            Path(spec["base_dir"]),
            Path(spec["data_path"]),
            spec["data_format"],
            TuneParams.from_dict(spec["params"]),
            Path(spec["out_dir"]),
            work_dir=Path(spec["work_dir"]),
            base_ref=spec["base_ref"],
            resume=spec["resume"],
            progress=on_step if progress_path else None,
            _stop_after=spec["stop_after"],
        )
        if rank == 0:
            tmp = run / "result.json.tmp"
            tmp.write_text(json.dumps(dataclasses.asdict(result)), encoding="utf-8")
            tmp.rename(run / "result.json")
        return 0
    except BaseException as e:
        import traceback

        traceback.print_exc()
        message = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if not isinstance(e, OwlError):
            message = f"{type(e).__name__}: {message}"
        report = {"type": type(e).__name__, "owl": isinstance(e, OwlError), "message": message}
        (run / f"error{rank}.json").write_text(json.dumps(report), encoding="utf-8")
        return 1
