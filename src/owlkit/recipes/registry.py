"""Every recipe by the name its manifests record: the one table `owl rebuild` re-runs recipes from.

A recipe module exports ``NAME``, ``Params`` (a dataclass: the manifest's ``recipe.params`` are its
fields) and ``run(store, inputs, params, *, name=None, capture=None) -> digest``. A new recipe is
added to ``MODULES``; tests/api/test_recipes.py fails for a recipe name some code stores that is not
here.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from owlkit.errors import Refused
from owlkit.recipes import convert, convert_pickle, demo_data, merge, merge_adapters, quantize, tune
from owlkit.store.manifest import Recipe
from owlkit.store.store import Store

MODULES: tuple[ModuleType, ...] = (convert, convert_pickle, demo_data, merge, merge_adapters, quantize, tune)
RECIPES: dict[str, ModuleType] = {m.NAME: m for m in MODULES}


def rerun(store: Store, recipe: Recipe, *, capture: Path | None = None) -> str:
    """Run a recorded recipe again on its recorded inputs and params; the output's digest."""
    module = RECIPES.get(recipe.name)
    if module is None:
        raise Refused(f"recipe {recipe.name!r} is not one owlkit can run (it runs {', '.join(RECIPES)})")
    return module.run(store, dict(recipe.inputs), module.Params(**recipe.params), capture=capture)
