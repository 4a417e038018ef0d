"""The terms commands through the Python API: `owl licenses`, `owl terms`, `owl openness` and
`owl attach` print with --json exactly the result's to_dict(), and `owl terms --use` exits with the
verdict's exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from owlkit import Owl
from owlkit.api import Attached, LicenseDetail, LicenseSummary, OpennessReport, Verdict
from owlkit.errors import NotFound, UsageError


def _licensed(src: Path, dest: Path, license_tag: str) -> Path:
    shutil.copytree(src, dest)
    (dest / "README.md").write_text(f"---\nlicense: {license_tag}\n---\n# {dest.name}\nA tiny Llama.\n")
    return dest


def _adapter_on(adapter: Path, dest: Path, base: str) -> Path:
    shutil.copytree(adapter, dest)
    cfg = json.loads((dest / "adapter_config.json").read_text())
    (dest / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": base}))
    return dest


def _dataset(dest: Path, license_tag: str) -> Path:
    dest.mkdir()
    (dest / "train.jsonl").write_text(
        json.dumps({"instruction": "Say hi.", "input": "", "output": "hi"}) + "\n"
    )
    (dest / "README.md").write_text(f"---\nlicense: {license_tag}\n---\n# data\n")
    return dest


@pytest.fixture
def lineage(owl, tiny_llama: Path, tiny_adapter: Path, tmp_path: Path) -> None:
    """A Llama 2 base, an adapter on it that declares nothing, and a non-commercial dataset."""
    assert owl("import", _licensed(tiny_llama, tmp_path / "l2", "llama2"), "--name", "l2").code == 0
    assert owl("import", _adapter_on(tiny_adapter, tmp_path / "l2-lora", "l2"), "--name", "l2-lora").code == 0
    assert owl("import", _dataset(tmp_path / "nc", "cc-by-nc-4.0"), "--name", "nc-data").code == 0


def test_licenses_json_is_to_dict(owl, owl_home: Path) -> None:
    api = Owl(owl_home)
    listed = api.licenses()
    assert all(isinstance(s, LicenseSummary) for s in listed)
    assert owl("licenses", "--json").json() == [s.to_dict() for s in listed]
    one = api.licenses("llama2")
    assert isinstance(one, LicenseDetail) and one.id == "LicenseRef-llama2"
    assert one.clauses["commercial_use"].mau_threshold == 700_000_000
    assert owl("licenses", "llama2", "--json").json() == one.to_dict()
    with pytest.raises(NotFound, match="did you mean"):
        api.licenses("llama5")


def test_terms_json_is_to_dict_and_the_exit_code_is_the_verdicts(owl, owl_home: Path, lineage: None) -> None:
    api = Owl(owl_home)
    for args, kwargs in [
        ((), {}),
        (("--use", "commercial"), {"use": "commercial"}),
        (
            ("--use", "commercial", "--monthly-users", "800000000"),
            {"use": "commercial", "monthly_users": 800_000_000},
        ),
        (
            ("--use", "research", "--if-trained-on", "nc-data"),
            {"use": "research", "if_trained_on": "nc-data"},
        ),
        (("--if-trained-on", "nc-data"), {"if_trained_on": "nc-data"}),
    ]:
        r = owl("terms", "l2-lora", *args, "--json")
        res = api.terms("l2-lora", **kwargs)
        assert r.json() == res.to_dict(), args
        if "use" in kwargs:
            assert r.code == res.exit_code, args
            assert owl("terms", "l2-lora", *args).code == res.exit_code  # the rendering exits the same


def test_verdict_reads_the_asked_use(owl_home: Path, lineage: None) -> None:
    api = Owl(owl_home)
    v = api.terms(api.get("l2-lora"), use="commercial", monthly_users=800_000_000)
    assert isinstance(v, Verdict) and v.artifact == "l2-lora:latest"
    assert (v.use, v.verdict, v.status, v.exit_code, v.allowed) == (
        "commercial",
        "forbidden",
        "forbidden",
        11,
        False,
    )
    step = next(s for s in v.chain if s.status == "forbidden")
    assert (step.artifact, step.license, step.clause) == ("l2:latest", "LicenseRef-llama2", "commercial_use")
    assert [(s.artifact, s.via) for s in v.ancestors] == [("l2:latest", "weights")]
    assert v.licenses["LicenseRef-llama2"].mau_threshold == 700_000_000

    every = api.terms("l2-lora")
    assert len(every.verdicts) == 6 and every.for_use("research").status == "allowed with obligations"
    with pytest.raises(UsageError, match="judged every use"):
        _ = every.status
    planned = api.terms("l2-lora", use="commercial", if_trained_on="nc-data")
    assert planned.status == "forbidden" and planned.planned is not None
    assert planned.planned.license == "CC-BY-NC-4.0" and "CC-BY-NC-4.0" in planned.licenses
    with pytest.raises(UsageError, match="not a use owlkit judges"):
        api.terms("l2-lora", use="world-domination")


def test_openness_and_attach_json_is_to_dict(owl, owl_home: Path, lineage: None) -> None:
    api = Owl(owl_home)
    cli = owl("attach", "l2", "-c", "training code", "--url", "https://x.org/t", "--license", "mit", "--json")
    assert cli.code == 0, cli.err
    again = api.attach("l2", "Training code", url="https://x.org/t", license="mit")
    assert isinstance(again, Attached) and again.replaced and again.license == "MIT"
    # the same record but for the time it was made and that it now replaces the CLI's
    assert {**cli.json(), "replaced": True, "added_at": again.added_at} == again.to_dict()

    report = api.openness("l2")
    assert isinstance(report, OpennessReport)
    assert report.finding("Training code").match.source == "attachment"
    assert owl("openness", "l2", "--json").json() == report.to_dict()
    assert owl("openness", "l2-lora", "--json").json() == api.openness("l2-lora").to_dict()

    removed = owl("attach", "l2", "-c", "Training code", "--remove", "--json").json()
    api.attach("l2", "Training code", url="https://x.org/t", license="mit")
    gone = api.detach("l2", "Training code")
    assert {**removed, "removed": {**removed["removed"], "added_at": gone.removed.added_at}} == gone.to_dict()
    with pytest.raises(NotFound, match="no attachment"):
        api.detach("l2", "Training code")
    with pytest.raises(UsageError, match="choose one of"):
        api.attach("l2", "weights", url="https://x.org")
    with pytest.raises(UsageError, match="not a URL"):
        api.attach("l2", "Training code", url="not a url")
