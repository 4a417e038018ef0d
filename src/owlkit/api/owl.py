"""`Owl`: the whole of owlkit as one object, one method per `owl` command.

Each command group's methods live in their own module (a mixin over `ApiBase`); this class only joins
them, so ``Owl`` reads like the CLI's command list.
"""

from __future__ import annotations

from owlkit.api.eval_api import EvalApi
from owlkit.api.model_api import ModelApi
from owlkit.api.recipe_api import RecipeApi
from owlkit.api.scan_api import ScanApi
from owlkit.api.store_api import StoreApi
from owlkit.api.terms_api import TermsApi
from owlkit.api.tune_api import TuneApi


class Owl(StoreApi, RecipeApi, ModelApi, TuneApi, EvalApi, TermsApi, ScanApi):
    """owlkit's Python API. ``Owl(home=None)`` works on the store at ``home`` (default: ``$OWL_HOME`` or
    the user data dir). Methods take a ref (name, ``name:tag``, digest or digest prefix) or an
    `Artifact`, return dataclasses whose ``to_dict()`` is the CLI's ``--json``, and raise `OwlError`
    subclasses for everything a user can get wrong."""
