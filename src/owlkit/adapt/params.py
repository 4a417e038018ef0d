"""The ``owl tune`` recipe's settings and result: what train.py runs and what ddp.py hands between
processes, in a module of their own so that neither imports the other for them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile, UsageError

METHODS = ("lora", "dora", "qlora", "full")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class TuneParams:
    """The recipe's settings; ``owl tune --config x.yaml`` is this dataclass as YAML."""

    method: str = "lora"
    """lora | dora | qlora | full."""
    r: int = 8
    """LoRA rank."""
    alpha: float = 16.0
    """LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with rslora)."""
    dropout: float = 0.0
    """Dropout on the LoRA input, 0 <= dropout < 1."""
    targets: list[str] | str = "all-linear"
    """Module names to adapt (q_proj, v_proj, ...) or "all-linear" (every linear layer but the output)."""
    rslora: bool = False
    """Rank-stabilised scaling alpha/sqrt(r)."""
    lr: float = 2e-4
    """Peak learning rate."""
    warmup: int = 0
    """Optimizer steps of linear warmup to the peak learning rate."""
    schedule: str = "cosine"
    """Learning-rate decay after warmup: cosine | linear | constant."""
    epochs: int = 1
    """Passes over the training examples (ignored when steps is set)."""
    steps: int | None = None
    """Optimizer steps to take; overrides epochs."""
    batch_size: int = 4
    """Sequences per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    seq_len: int = 256
    """Tokens per sequence; longer examples are truncated."""
    packing: bool = True
    """Pack several examples into each sequence (no attention across them)."""
    grad_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, more time."""
    eval_split: float = 0.0
    """Fraction of examples held out for eval loss, 0 <= eval_split < 1."""
    eval_every: int = 0
    """Compute eval loss every this many steps (0: only at the end, when there is an eval split)."""
    save_every: int = 0
    """Write a resumable checkpoint every this many steps (0: never)."""
    template: str | None = None
    """None: the base's chat template if it has one, else Alpaca; "alpaca" forces the Alpaca prompt."""
    seed: int = 0
    """Seed for initialisation, dropout and data order."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this (0: no clipping)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    nproc: int = 1
    """Data-parallel processes (DDP); batch_size stays the global micro-batch, split evenly over them."""

    def __post_init__(self) -> None:
        def bad(flag: str, why: str) -> UsageError:
            return UsageError(f"--{flag.replace('_', '-')}: {why}")

        if self.method not in METHODS:
            raise bad("method", f"{self.method!r} is not one of {', '.join(METHODS)}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"{self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        for name in ("r", "epochs", "batch_size", "grad_accum", "seq_len", "nproc"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, f"must be a whole number >= 1, not {value!r}")
        for name in ("warmup", "eval_every", "save_every", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, f"must be a whole number >= 0, not {value!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1
        ):
            raise bad("steps", f"must be a whole number >= 1, not {self.steps!r}")
        if not self.lr > 0:
            raise bad("lr", f"must be > 0, not {self.lr!r}")
        if not self.alpha > 0:
            raise bad("alpha", f"must be > 0, not {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise bad("dropout", f"must be in [0, 1), not {self.dropout!r}")
        if not 0 <= self.eval_split < 1:
            raise bad("eval_split", f"must be in [0, 1), not {self.eval_split!r}")
        if self.eval_every and not self.eval_split:
            raise bad("eval_every", "needs --eval-split > 0 to have examples to evaluate")
        if self.max_grad_norm < 0 or self.weight_decay < 0:
            flag = "max_grad_norm" if self.max_grad_norm < 0 else "weight_decay"
            raise bad(flag, "must be >= 0")
        if isinstance(self.targets, str):
            if self.targets != "all-linear" and not self.targets:
                raise bad("targets", 'give module names or "all-linear"')
        elif not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise bad("targets", 'give module names or "all-linear"')
        if self.batch_size % self.nproc:
            raise bad(
                "nproc",
                f"--batch-size {self.batch_size} does not split evenly over {self.nproc} processes; "
                f"use a batch size divisible by {self.nproc}",
            )
        if self.method == "full" and (self.targets != "all-linear" or self.rslora or self.dropout):
            raise bad("method", "full trains every weight; drop --targets, --rslora and --dropout")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "params") -> TuneParams:
        if not isinstance(data, dict):
            raise UsageError(f"{where}: expected a mapping of tune params")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise UsageError(
                f"{where}: unknown tune params {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: Path) -> TuneParams:
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            raise InvalidFile(f"{path.name}: not valid YAML ({type(e).__name__}); fix the file") from None
        return cls.from_dict(data or {}, path.name)

    @classmethod
    def merged(cls, config: Path | None = None, **overrides: Any) -> TuneParams:
        """What ``owl tune --config CONFIG --FLAG VALUE ...`` trains with: the YAML file's params (or the
        defaults), each override that is not None in place of its key. ``targets`` may be given as
        "q_proj,v_proj" (a comma-separated string) as well as a list."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UsageError(f"unknown tune params {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        targets = overrides.get("targets")
        if isinstance(targets, str) and targets != "all-linear":
            overrides["targets"] = [t.strip() for t in targets.split(",")]
        given = {k: v for k, v in overrides.items() if v is not None}
        base = cls.from_yaml(config) if config is not None else None
        return dataclasses.replace(base, **given) if base is not None else cls(**given)

    def to_yaml(self, path: Path) -> None:
        import yaml

        Path(path).write_text(yaml.safe_dump(self.as_dict(), sort_keys=False), encoding="utf-8")


@dataclass
class TrainResult:
    steps: int
    log: list[dict] = field(default_factory=list)
    """One entry per step: step, loss, lr, tokens (cumulative), eval_loss when evaluated."""
    data_report: dict = field(default_factory=dict)
    data_order_digest: str = ""
    """sha256 of the JSON example order: eval indices and each training epoch's order."""
    initial_eval_loss: float | None = None
    """Eval loss of the untrained model, when there is an eval split (the baseline for final_eval_loss)."""
    final_eval_loss: float | None = None
    tokens_per_s: float = 0.0
    num_threads: int = 1
    deterministic: bool = False
    notes: list[str] = field(default_factory=list)
    """What the run did differently from what was asked, in a sentence each (e.g. no paged optimizer)."""
    world_size: int = 1
    """Data-parallel processes; with more than one, num_threads is the total split over them."""
    rank: int = 0
    """This process's rank: only rank 0 writes the output (and stores it)."""
    threads_per_rank: int | None = None
    """Torch threads each rank used (data-parallel runs only)."""
