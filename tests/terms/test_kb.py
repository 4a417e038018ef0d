"""owlkit.terms.kb: the license knowledge base files validate, agree with detection, and say what the
license texts say (expected values below come from ../shared/docs/openness-and-licenses.md §B, not
from the YAML files)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from owlkit.errors import InvalidFile, NotFound
from owlkit.formats.license import normalize_license
from owlkit.terms.kb import (
    CLAUSES,
    LICENSES_DIR,
    find_license,
    licenses_in,
    load_kb,
    load_license_dir,
    load_license_file,
    validate_license_data,
)

PACKAGED = sorted(LICENSES_DIR.glob("*.yaml"))

REQUIRED_IDS = [
    "Apache-2.0",
    "MIT",
    "BSD-3-Clause",
    "CC0-1.0",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-NC-4.0",
    "CC-BY-NC-SA-4.0",
    "CDLA-Permissive-2.0",
    "ODC-By-1.0",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "AGPL-3.0-only",
    "LicenseRef-openmdw-1.0",
    "LicenseRef-creativeml-openrail-m",
    "LicenseRef-bigscience-openrail-m",
    "LicenseRef-bigscience-bloom-rail-1.0",
    "LicenseRef-llama1",
    "LicenseRef-llama2",
    "LicenseRef-llama3",
    "LicenseRef-llama3.1",
    "LicenseRef-llama3.2",
    "LicenseRef-llama3.3",
    "LicenseRef-gemma",
    "LicenseRef-falcon-180b",
    "LicenseRef-tongyi-qianwen",
    "LicenseRef-qwen",
    "LicenseRef-deepseek",
    "LicenseRef-mrl",
    "LicenseRef-openai-tou",
]

# Hugging Face license tags whose detected id must be in the knowledge base.
HF_TAGS = [
    "llama2",
    "llama3",
    "llama3.1",
    "llama3.2",
    "llama3.3",
    "llama4",
    "gemma",
    "creativeml-openrail-m",
    "bigscience-openrail-m",
    "bigscience-bloom-rail-1.0",
    "openmdw-1.0",
    "apache-2.0",
    "mit",
    "bsd-3-clause",
    "cc0-1.0",
    "cc-by-4.0",
    "cc-by-sa-3.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0",
    "cdla-permissive-2.0",
    "odc-by",
    "gpl-3.0",
    "agpl-3.0",
]


def _apache_data() -> dict:
    return yaml.safe_load((LICENSES_DIR / "Apache-2.0.yaml").read_text(encoding="utf-8"))


# --- the packaged files -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: p.name)
def test_every_packaged_license_file_validates(path: Path) -> None:
    lic = load_license_file(path)
    assert path.name == f"{lic.id}.yaml"
    assert set(lic.clauses) == set(CLAUSES)
    for clause in lic.clauses.values():
        assert not clause.verified or clause.source_url, (
            f"{path.name}: {clause.name} verified without a source"
        )


def test_knowledge_base_loads_every_file_once() -> None:
    kb = load_kb()
    assert len(kb) == len(PACKAGED)
    assert load_kb() is kb  # cached


@pytest.mark.parametrize("license_id", REQUIRED_IDS)
def test_required_licenses_present(license_id: str) -> None:
    assert license_id in load_kb()
    assert find_license(license_id).id == license_id


@pytest.mark.parametrize("tag", HF_TAGS)
def test_hub_tags_resolve_to_the_detected_id(tag: str) -> None:
    detected = normalize_license(tag)
    assert detected is not None
    assert find_license(detected).id == detected
    assert find_license(tag).id == detected


def test_every_alias_agrees_with_detection() -> None:
    """What formats/license.py makes of an alias (if anything) leads back to the same license."""
    for lic in load_kb().values():
        for alias in (lic.id, *lic.aliases):
            assert find_license(alias) is lic, alias
            detected = normalize_license(alias)
            if detected is not None:
                assert find_license(detected) is lic, f"{alias!r} -> {detected}"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("APACHE-2.0", "Apache-2.0"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("  Llama 2   Community License Agreement ", "LicenseRef-llama2"),
        ("tongyi-qianwen", "LicenseRef-tongyi-qianwen"),
        ("qwen", "LicenseRef-qwen"),
        ("deepseek-license", "LicenseRef-deepseek"),
        ("mrl", "LicenseRef-mrl"),
        ("LicenseRef-scancode-llama-3.1-license-2024", "LicenseRef-llama3.1"),
        ("GPL-3.0+", "GPL-3.0-or-later"),
    ],
)
def test_find_license_by_alias_any_case(name: str, expected: str) -> None:
    assert find_license(name).id == expected


def test_unknown_license_is_not_found_with_suggestions() -> None:
    with pytest.raises(NotFound) as err:
        find_license("llama5")
    msg = str(err.value)
    assert "\n" not in msg
    assert "llama5" in msg and "did you mean" in msg and "LicenseRef-llama" in msg


def test_to_dict_round_trips() -> None:
    for lic in load_kb().values():
        assert validate_license_data(lic.to_dict(), f"{lic.id}.yaml") == lic


# --- malformed files --------------------------------------------------------------------------------


def _break(mutate) -> dict:
    data = copy.deepcopy(_apache_data())
    mutate(data)
    return data


@pytest.mark.parametrize(
    "mutate,words",
    [
        (lambda d: d.pop("family"), "missing key 'family'"),
        (lambda d: d.update(extra=1), "unknown key"),
        (lambda d: d.update(family="freeware"), "family"),
        (lambda d: d.update(id="Apache 2"), "id"),
        (lambda d: d.update(aliases=["Apache-2.0"]), "lowercase"),
        (lambda d: d.update(aliases=["a", "a"]), "twice"),
        (lambda d: d.update(osi_approved="yes"), "osi_approved"),
        (lambda d: d.update(version_date="July 2023"), "version_date"),
        (lambda d: d["clauses"].pop("naming"), "missing clause 'naming'"),
        (lambda d: d["clauses"].update(vibes={}), "unknown clause"),
        (lambda d: d["clauses"]["commercial_use"].update(value="maybe"), "'commercial_use': value 'maybe'"),
        (lambda d: d["clauses"]["naming"].update(value="yes"), "'naming': value"),
        (lambda d: d["clauses"]["commercial_use"].pop("verified"), "missing key 'verified'"),
        (lambda d: d["clauses"]["commercial_use"].update(verified="true"), "verified must be"),
        (
            lambda d: d["clauses"]["commercial_use"].update(source={"url": None, "section": None}),
            "needs source.url",
        ),
        (lambda d: d["clauses"]["commercial_use"].update(source={"url": "apache.org"}), "source"),
        (lambda d: d["clauses"]["commercial_use"].update(mau_threshold="700M"), "mau_threshold"),
        (lambda d: d["clauses"]["patent_grant"].update(mau_threshold=5), "unknown key"),
        (lambda d: d["clauses"]["use_restrictions"].update(pass_down="no"), "pass_down"),
    ],
)
def test_malformed_license_data_is_one_line_invalid_file(mutate, words: str) -> None:
    with pytest.raises(InvalidFile) as err:
        validate_license_data(_break(mutate), "broken.yaml")
    msg = str(err.value)
    assert msg.startswith("broken.yaml: ") and "\n" not in msg
    assert words in msg


def test_yaml_syntax_error_is_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "Broken-1.0.yaml"
    path.write_text('id: Broken-1.0\nname: "unterminated\nclauses: {\n', encoding="utf-8")
    with pytest.raises(InvalidFile) as err:
        load_license_file(path)
    assert str(err.value).startswith("Broken-1.0.yaml: YAML syntax error") and "\n" not in str(err.value)


def test_bare_yes_no_in_yaml_read_as_values() -> None:
    """YAML 1.1 reads ``value: yes`` as a boolean; the schema's bare yes/no still mean "yes"/"no"."""
    lic = load_license_file(LICENSES_DIR / "Apache-2.0.yaml")
    assert lic.clauses["commercial_use"].value == "yes"
    assert lic.clauses["share_alike"].value == "no"


def test_duplicate_alias_across_files_names_both(tmp_path: Path) -> None:
    first = _apache_data()
    second = _break(lambda d: d.update(id="LicenseRef-apache-copy", aliases=["apache 2.0"]))
    (tmp_path / "Apache-2.0.yaml").write_text(yaml.safe_dump(first), encoding="utf-8")
    (tmp_path / "LicenseRef-apache-copy.yaml").write_text(yaml.safe_dump(second), encoding="utf-8")
    with pytest.raises(InvalidFile) as err:
        load_license_dir(tmp_path)
    msg = str(err.value)
    assert "'apache 2.0'" in msg and "Apache-2.0" in msg and "LicenseRef-apache-copy.yaml" in msg


def test_file_name_must_match_id(tmp_path: Path) -> None:
    (tmp_path / "apache.yaml").write_text(yaml.safe_dump(_apache_data()), encoding="utf-8")
    with pytest.raises(InvalidFile, match=r"apache\.yaml: .*'Apache-2\.0\.yaml'"):
        load_license_dir(tmp_path)


# --- facts (expected answers from openness-and-licenses.md §B) ---------------------------------------


def _clause(license_id: str, name: str):
    clause = find_license(license_id).clauses[name]
    assert clause.verified and clause.source_url, f"{license_id} {name} should be verified"
    return clause


def test_llama2_commercial_use_conditional_on_700m_mau() -> None:
    clause = _clause("llama2", "commercial_use")
    assert clause.value == "conditional"
    assert clause.mau_threshold == 700_000_000
    assert _clause("llama2", "outputs_training").value == "forbidden"
    assert _clause("llama2", "attribution").notice_text.startswith("Llama 2 is licensed under the LLAMA 2")


def test_cc_by_nc_forbids_commercial_use() -> None:
    assert _clause("cc-by-nc-4.0", "commercial_use").value == "no"
    assert _clause("cc-by-nc-sa-4.0", "commercial_use").value == "no"
    assert _clause("cc-by-sa-3.0", "share_alike").value == "yes"


def test_llama3_naming_prefix() -> None:
    naming = _clause("llama3", "naming")
    assert (naming.value, naming.text) == ("prefix", "Llama 3")
    assert _clause("llama3", "outputs_training").value == "forbidden"
    # 3.1 onwards: outputs may train other models, but the result must be named "Llama…"
    for tag in ("llama3.1", "llama3.2", "llama3.3"):
        assert (_clause(tag, "naming").value, _clause(tag, "naming").text) == ("prefix", "Llama")
        assert _clause(tag, "outputs_training").value != "forbidden"
        assert _clause(tag, "commercial_use").mau_threshold == 700_000_000


def test_apache_patent_grant() -> None:
    assert _clause("Apache-2.0", "patent_grant").value == "yes"


def test_openai_terms_forbid_training_competing_models_on_outputs() -> None:
    assert _clause("LicenseRef-openai-tou", "outputs_training").value == "forbidden"


def test_openrail_use_restrictions_pass_down() -> None:
    clause = _clause("creativeml-openrail-m", "use_restrictions")
    assert clause.value == "yes" and clause.pass_down is True
    assert _clause("gemma", "use_restrictions").pass_down is True


def test_other_ai_license_facts() -> None:
    assert _clause("gemma", "attribution").notice_text == (
        "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
    )
    assert _clause("qwen", "commercial_use").mau_threshold == 100_000_000
    assert _clause("tongyi-qianwen", "outputs_training").value == "forbidden"
    assert _clause("mrl", "commercial_use").value == "no"


def test_licenses_in_expression() -> None:
    assert licenses_in("mit OR apache-2.0") == ["MIT", "Apache-2.0"]
    assert licenses_in("llama3.1 AND cc-by-nc-4.0") == ["LicenseRef-llama3.1", "CC-BY-NC-4.0"]
    assert licenses_in("GPL-2.0-or-later WITH Classpath-exception-2.0") == ["GPL-2.0-or-later"]


# --- owl licenses ------------------------------------------------------------------------------------


def test_owl_licenses_lists_every_license(owl) -> None:
    r = owl("licenses")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "FAMILY", "COMMERCIAL", "USE", "VERIFIED"]
    assert len(lines) == 1 + len(load_kb())
    llama2 = next(line for line in lines if line.startswith("LicenseRef-llama2 "))
    assert "conditional (>700M MAU)" in llama2 and "11/11" in llama2

    rows = owl("licenses", "--json").json()
    assert {row["id"] for row in rows} == set(load_kb())


def test_owl_licenses_shows_one(owl) -> None:
    data = owl("licenses", "LicenseRef-llama2", "--json").json()
    assert data["id"] == "LicenseRef-llama2"
    assert data["clauses"]["commercial_use"]["mau_threshold"] == 700_000_000
    assert data["clauses"]["commercial_use"]["source"]["section"] == "§2"

    r = owl("licenses", "mnpl")
    assert r.code == 0, r.err
    assert "LicenseRef-mnpl" in r.out and "(unverified)" in r.out and "source: §3.2" in r.out


def test_owl_licenses_unknown_id(owl) -> None:
    r = owl("licenses", "llama5")
    assert r.code == NotFound.exit_code
    assert r.err.count("\n") == 1 and "did you mean" in r.err
