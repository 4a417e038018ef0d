"""The ``demo-data`` recipe: owlkit writes the demo's instruction data itself, from a seed.

The task: the input is 3 to 5 common English words separated by ", "; the output is the same words in
reverse order joined by " | " (``apple, river, seven`` -> ``seven | river | apple``). The result is an
Alpaca-format dataset folder (``train.jsonl``, ``test.jsonl`` for the held-out rows, a README.md card and a CC0-1.0
LICENSE), stored with the generator and its params as the recipe and no parents: nothing outside this
module goes into it, so anyone may use it.

Guarantees, for the same params:

- exact counts: ``train`` training rows and ``heldout`` held-out rows;
- no two rows of the whole dataset use the same *set* of words, so a held-out input is neither a
  training input nor a reordering of one (stronger than "no shared word list"), and neither split
  repeats an input; the words within one input are distinct;
- the held-out rows are drawn first, so they depend only on ``seed``, ``min_words`` and ``max_words``:
  changing ``--train`` keeps the held-out set (and so evaluations stay comparable);
- byte-identical files, hence the same artifact digest. Only ``Generator.integers`` of numpy's PCG64 is
  used; numpy keeps that stream stable, and its version is in the side record.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from owlkit.errors import UsageError
from owlkit.formats.base import Inspected
from owlkit.recipes import make_recipe, store_output
from owlkit.store.names import parse_name
from owlkit.store.store import Store

NAME = "demo-data"
GENERATOR = "owlkit.recipes.demo_data"
# Bump when the output for the same params changes (word list, wording, file layout).
GENERATOR_VERSION = 2
DEFAULT_NAME = "demo-data"
LICENSE_ID = "CC0-1.0"
INSTRUCTION = 'Reverse the order of these words. Answer with the words separated by " | ".'
INPUT_SEP = ", "
OUTPUT_SEP = " | "
TRAIN_FILE = "train.jsonl"
HELDOUT_FILE = "test.jsonl"  # the test split, by the Hugging Face datasets naming
MAX_ROWS = 1_000_000  # train + heldout; keeps a run to seconds and a folder to tens of MB
MAX_WORDS_LIMIT = 20

# Common English words: lower-case ASCII letters only (no separator can appear inside one), no
# duplicates. Part of the generator: changing it changes every dataset, so bump GENERATOR_VERSION.
_WORD_TEXT = """
    apple river seven table house green water stone light music paper happy
    bread chair cloud dance earth field glass heart horse juice knife lemon
    money night ocean party queen radio sugar tiger voice watch youth zebra
    angry beach black board brain brown candy chain chest child clock coast
    color cream dream dress drink eagle empty fence fever final flame floor
    flour fruit ghost giant grape grass guard guest honey hotel input jelly
    judge label laugh layer level lucky magic maple metal model mouse mouth
    nurse olive onion owner paint panel peace pearl phone piano pilot pizza
    plane plant plate point pound power price pride prize proof quiet quick
    rain range ridge right robot rough round royal salad sauce scale scene
    shape sheep shelf shell shirt shoe short sight silver skill sleep small
    smile smoke snake snow solid sound south space speed spice spoon sport
    staff stage stair steam steel stick storm story stove street sweet swift
    tablet tooth torch tower towel track trade train tree truck trust truth
    uncle union upper urban value video visit vivid wagon wall whale wheat
    wheel white wind window winter wolf woman world yard yellow young
    animal answer autumn basket butter button camera candle carpet castle
    cheese circle coffee cookie copper corner cotton desert dinner doctor
    dragon engine family farmer finger flower forest friend garden ginger
    guitar hammer island jacket jungle kettle kitten ladder letter lizard
    market meadow mirror monkey mother needle number orange oxygen pencil
    pepper pillow planet pocket potato rabbit rocket saddle school silk
    sister spider spring summer sunset tennis ticket tomato turtle valley
    violin wallet winner wizard yogurt bridge bottle blanket balloon anchor
    ant bee bird boat book box bus cake car cat cow cup dog door duck egg
    farm fish flag fog fox frog gold hat hill ice ink jar key kite lake
    lamp leaf lion map milk moon nest nose oak owl pan pen pig pink rice
    ring road rose salt sea ship sky sock soup star sun tea tent toy van
    vest wax web wing wool
"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())


@dataclass
class DemoDataParams:
    train: int = 1000
    """Training rows to write (train.jsonl)."""
    heldout: int = 200
    """Held-out rows to write (test.jsonl); no held-out input shares its set of words with any other row."""
    seed: int = 0
    """Seed of the numpy PCG64 generator: the same seed and params give byte-identical files."""
    min_words: int = 3
    """Fewest words in one input."""
    max_words: int = 5
    """Most words in one input."""

    def __post_init__(self) -> None:
        if self.train < 1:
            raise UsageError(f"--train {self.train}: write at least 1 training row")
        if self.heldout < 1:
            raise UsageError(f"--heldout {self.heldout}: write at least 1 held-out row")
        if self.train + self.heldout > MAX_ROWS:
            raise UsageError(
                f"--train {self.train} --heldout {self.heldout}: at most {MAX_ROWS} rows in all; ask for fewer"
            )
        if not 0 <= self.seed < 2**63:
            raise UsageError(f"--seed {self.seed}: use a whole number from 0 to 2**63 - 1")
        if not 2 <= self.min_words <= self.max_words <= MAX_WORDS_LIMIT:
            raise UsageError(
                f"--min-words {self.min_words} --max-words {self.max_words}: "
                f"need 2 <= min-words <= max-words <= {MAX_WORDS_LIMIT}"
            )
        # Rows are drawn by rejection; keep the space at least twice the rows so drawing stays quick.
        space = sum(math.comb(len(WORDS), k) for k in range(self.min_words, self.max_words + 1))
        if 2 * (self.train + self.heldout) > space:
            raise UsageError(
                f"--train {self.train} --heldout {self.heldout}: only {space} distinct word sets of "
                f"{self.min_words}-{self.max_words} words; ask for fewer rows or allow more words"
            )


@dataclass
class DemoData:
    """The generated rows: each one a list of words (the input, in order)."""

    train: list[tuple[str, ...]]
    heldout: list[tuple[str, ...]]


def alpaca_row(words: tuple[str, ...]) -> dict[str, str]:
    """One Alpaca row of the task: the words comma-separated in, reversed and " | "-joined out."""
    return {
        "instruction": INSTRUCTION,
        "input": INPUT_SEP.join(words),
        "output": OUTPUT_SEP.join(reversed(words)),
    }


def _draw(rng: np.random.Generator, params: DemoDataParams) -> tuple[str, ...]:
    k = int(rng.integers(params.min_words, params.max_words + 1))
    picked: list[str] = []
    while len(picked) < k:
        word = WORDS[int(rng.integers(len(WORDS)))]
        if word not in picked:
            picked.append(word)
    return tuple(picked)


def generate(params: DemoDataParams) -> DemoData:
    """The rows for ``params``: held-out first, then training, every row a word set not seen before."""
    rng = np.random.Generator(np.random.PCG64(params.seed))
    seen: set[frozenset[str]] = set()

    def split(n: int) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        while len(rows) < n:
            words = _draw(rng, params)
            key = frozenset(words)
            if key not in seen:
                seen.add(key)
                rows.append(words)
        return rows

    heldout = split(params.heldout)
    return DemoData(train=split(params.train), heldout=heldout)


def _jsonl(rows: list[tuple[str, ...]]) -> bytes:
    return "".join(json.dumps(alpaca_row(r), ensure_ascii=True) + "\n" for r in rows).encode()


def _card(params: DemoDataParams) -> str:
    # Fixed text (no dates, no library versions) so the same params give the same bytes.
    p = asdict(params)
    return f"""---
license: cc0-1.0
language:
- en
pretty_name: owlkit demo data (reverse a word list)
task_categories:
- text-generation
generator: {GENERATOR}
generator_version: {GENERATOR_VERSION}
seed: {params.seed}
params:
{"".join(f"  {k}: {v}{chr(10)}" for k, v in p.items())}configs:
- config_name: default
  data_files:
  - split: train
    path: {TRAIN_FILE}
  - split: test
    path: {HELDOUT_FILE}
---

# owlkit demo data: reverse a word list

Synthetic instruction data written by owlkit's `{NAME}` recipe (`owl data demo --seed {params.seed}`);
no outside text went into it.

Task: the input is {params.min_words} to {params.max_words} common English words separated by
"{INPUT_SEP.strip()} "; the output is the same words in reverse order joined by "{OUTPUT_SEP}".

| instruction | input | output |
|---|---|---|
| {INSTRUCTION.replace("|", "&#124;")} | apple, river, seven | seven &#124; river &#124; apple |

Splits (Alpaca format: `instruction`, `input`, `output`):

- `{TRAIN_FILE}`: {params.train} rows;
- `{HELDOUT_FILE}`: {params.heldout} rows for evaluation.

No two rows of the dataset use the same set of words: a held-out input is never a training input, nor
a reordering of one. The words within an input are distinct. The same parameters always give the same
files (numpy PCG64 generator, seed {params.seed}).

License: CC0 1.0 Universal (see LICENSE).
"""


LICENSE_TEXT = """CC0 1.0 Universal

SPDX-License-Identifier: CC0-1.0

This dataset was generated by a program (owlkit's demo-data recipe) from a fixed list of common English
words; it contains no other work. To the extent possible under law, the people who made it have waived
all copyright and related or neighboring rights to it, dedicating it to the public domain under the
Creative Commons CC0 1.0 Universal Public Domain Dedication.

The full legal code: https://creativecommons.org/publicdomain/zero/1.0/legalcode
"""


def write_demo_data(folder: Path, params: DemoDataParams) -> DemoData:
    """Write the dataset folder (created; must not hold other files) and return its rows."""
    data = generate(params)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TRAIN_FILE).write_bytes(_jsonl(data.train))
    (folder / HELDOUT_FILE).write_bytes(_jsonl(data.heldout))
    (folder / "README.md").write_bytes(_card(params).encode())
    (folder / "LICENSE").write_bytes(LICENSE_TEXT.encode())
    return data


def _inspect(folder: Path, params: DemoDataParams) -> Inspected:
    from owlkit.formats.datasets import inspect_dataset

    ins = inspect_dataset(folder)
    # Facts are hashed: the split sizes and the task are part of what this artifact is.
    ins.facts["splits"] = {"train": params.train, "heldout": params.heldout}
    ins.facts["task"] = "reverse-word-list"
    ins.facts["generator"] = f"{GENERATOR} v{GENERATOR_VERSION}"
    return ins


Params = DemoDataParams


def run(
    store: Store,
    inputs: dict[str, str],
    params: DemoDataParams,
    *,
    name: str | None = None,
    capture: Path | None = None,
) -> str:
    """:func:`demo_data` (it has no inputs)."""
    return demo_data(store, params, name=name, capture=capture)


def demo_data(
    store: Store, params: DemoDataParams, *, name: str | None = None, capture: Path | None = None
) -> str:
    """Generate the demo dataset and store it (kind dataset, license CC0-1.0); returns its digest
    (``capture``: see :func:`owlkit.recipes.store_output`)."""
    started = time.time()
    out_name = name or DEFAULT_NAME
    parse_name(out_name)  # before the work, not after
    with store.session() as scratch:
        out = scratch.dir / "out"
        write_demo_data(out, params)
        ins = _inspect(out, params)
        if ins.facts.get("data_format") != "alpaca" or ins.license.id != LICENSE_ID:
            # A change to the dataset reader or license detection must not go unnoticed here.
            raise AssertionError(
                f"demo data read back as {ins.facts.get('data_format')} / {ins.license.id}, "
                f"not alpaca / {LICENSE_ID}"
            )
        side = {
            "origin": {"recipe": NAME, "generator": GENERATOR, "generator_version": GENERATOR_VERSION},
            "license": {k: v for k, v in vars(ins.license).items() if v is not None},
        }
        return store_output(
            store,
            ins,
            recipe=make_recipe(NAME, params, {}, seed=params.seed),
            parents=[],
            license=LICENSE_ID,
            side=side,
            name=out_name,
            started=started,
            capture=capture,
        )
