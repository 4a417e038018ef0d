"""The terms commands: licenses, terms, openness and attach (with detach, `owl attach --remove`)."""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, overload

from owlkit.api.base import ApiBase, Ref, ref_str
from owlkit.errors import NotFound, UsageError

# The results subclass the terms layer's dataclasses: imported when a method runs, so that importing
# the API does not load the license knowledge base's and the openness rules' modules.
if TYPE_CHECKING:
    from owlkit.api.terms_results import (
        Attached,
        Detached,
        LicenseDetail,
        LicenseSummary,
        OpennessReport,
        Source,
        Verdict,
    )


class TermsApi(ApiBase):
    @overload
    def licenses(self, license_id: None = None) -> list[LicenseSummary]: ...

    @overload
    def licenses(self, license_id: str) -> LicenseDetail: ...

    def licenses(self, license_id: str | None = None) -> list[LicenseSummary] | LicenseDetail:
        """The license knowledge base: every license, sorted by id; or, given a license id, alias or
        Hugging Face tag (``llama3.1``, ``Apache-2.0``), that license with every clause and the text
        it comes from (NotFound, with the closest ids, for one it does not hold)."""
        from owlkit.api.terms_results import LicenseDetail, LicenseSummary
        from owlkit.terms.kb import find_license, load_kb

        if license_id is None:
            return [LicenseSummary.of(lic) for lic in sorted(load_kb().values(), key=lambda x: x.id.lower())]
        return LicenseDetail(**vars(find_license(license_id)))

    def terms(
        self,
        ref: Ref,
        *,
        use: str | None = None,
        monthly_users: int | None = None,
        if_trained_on: Ref | None = None,
    ) -> Verdict:
        """May this artifact be used so? The verdict for ``use`` (commercial, research, internal,
        redistribute-weights, serve-api, train-other-model; every use when None), the chain of
        licenses and clauses through its lineage behind it, and the obligations. ``monthly_users``
        answers thresholds such as Llama's 700M; ``if_trained_on`` (a dataset) answers for the
        artifact tuned on it, before any training."""
        from owlkit.api.terms_results import Verdict
        from owlkit.terms.propagate import USES, hypothetical_data, lineage_sources, verdict

        if monthly_users is not None and monthly_users < 0:
            raise UsageError(f"monthly_users {monthly_users} is negative: give a count of users, 0 or more")
        with self._store() as store:
            rec = self._record(store, ref)
            planned = hypothetical_data(store, self._record(store, if_trained_on)) if if_trained_on else None
            extra = [planned] if planned else []
            verdicts = [
                verdict(store, rec, u, monthly_users=monthly_users, extra=extra)
                for u in ([use] if use else USES)
            ]
            sources = lineage_sources(store, rec)
        return Verdict(
            artifact=rec.name,
            digest=rec.digest,
            if_trained_on=ref_str(if_trained_on) if if_trained_on else None,
            sources=sources,
            verdicts=verdicts,
            planned=planned,
            licenses=_summaries([*sources, *extra]),
        )

    def openness(self, ref: Ref) -> OpennessReport:
        """Rate a model or adapter against the Model Openness Framework (its 17 components and class)
        and OSAID 1.0. Each component is found by one rule (files, card sections, lineage, recorded
        recipe) or by an `attach` record. Refused for a dataset."""
        from owlkit.api.terms_results import OpennessReport
        from owlkit.terms.openness import assess

        with self._store() as store:
            return OpennessReport(**vars(assess(store, self._record(store, ref))))

    def attach(self, ref: Ref, component: str, *, url: str, license: str | None = None) -> Attached:
        """Record a component that lives elsewhere (a paper, a code repository, a dataset; MOF's name in
        any case, e.g. "training code") and its license, beside the artifact: its digest does not
        change. Attaching again replaces the record; `detach` removes it."""
        from owlkit.api.terms_results import Attached
        from owlkit.terms.openness import attach, check_url, find_component

        comp = find_component(component)  # a bad name or URL fails before the store is opened for writing
        check_url(url)
        with self._store(write=True) as store:
            rec = self._record(store, ref)
            att, replaced, warnings = attach(store, rec, comp.name, url, license)
            return Attached(
                digest=rec.digest,
                component=comp.name,
                replaced=replaced,
                warnings=warnings,
                url=att.url,
                license=att.license,
                license_given=att.license_given,
                added_at=att.added_at,
                name=rec.name,
            )

    def detach(self, ref: Ref, component: str) -> Detached:
        """Remove a component's attachment (`owl attach --remove`); NotFound when there is none."""
        from owlkit.api.terms_results import Detached
        from owlkit.terms.openness import detach, find_component

        comp = find_component(component)
        with self._store(write=True) as store:
            rec = self._record(store, ref)
            return Detached(rec.digest, comp.name, detach(store, rec, comp.name), rec.name)


def _summaries(sources: list[Source]) -> dict[str, LicenseSummary]:
    """The knowledge base's summary of each license the sources name (expressions and licenses it does
    not hold have none)."""
    from owlkit.api.terms_results import LicenseSummary
    from owlkit.terms.kb import find_license

    out: dict[str, LicenseSummary] = {}
    for s in sources:
        if s.license in out:
            continue
        with suppress(NotFound):
            out[s.license] = LicenseSummary.of(find_license(s.license))
    return out
