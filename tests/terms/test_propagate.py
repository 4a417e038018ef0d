"""`owl terms`: verdicts for planned uses, through lineage, against answers read from the license texts
(../shared/docs/openness-and-licenses.md, section B), not from owlkit's own YAML."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ALLOWED, OBLIGATIONS, FORBIDDEN, UNKNOWN = 0, 10, 11, 12


def licensed_model(src: Path, dst: Path, license_tag: str | None) -> Path:
    """A copy of the tiny Llama whose model card declares ``license_tag`` (or nothing)."""
    shutil.copytree(src, dst)
    card = f"---\nlicense: {license_tag}\n---\n" if license_tag else ""
    (dst / "README.md").write_text(card + f"# {dst.name}\nA tiny random Llama for tests.\n")
    return dst


def adapter_on(adapter: Path, dst: Path, base_name: str) -> Path:
    shutil.copytree(adapter, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = base_name
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def data_file(folder: Path, license_tag: str) -> Path:
    folder.mkdir()
    rows = [{"instruction": "Say hi.", "input": "", "output": "hi"}] * 4
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "README.md").write_text(f"---\nlicense: {license_tag}\n---\n# data\n")
    return folder


def terms(owl, *args: str) -> tuple[int, dict]:
    r = owl("terms", *args, "--json")
    return r.code, (r.json() if r.out.strip() else {"err": r.err})


def test_llama2_finetune_above_700m_monthly_users_is_forbidden(
    owl, tiny_llama, tiny_adapter, tmp_path
) -> None:
    """Llama 2 §2: more than 700M monthly active users needs a license from Meta."""
    assert owl("import", licensed_model(tiny_llama, tmp_path / "l2", "llama2"), "--name", "l2").code == 0
    assert owl("import", adapter_on(tiny_adapter, tmp_path / "l2-lora", "l2"), "--name", "l2-lora").code == 0
    code, out = terms(owl, "l2-lora", "--use", "commercial", "--monthly-users", "800000000")
    assert code == FORBIDDEN
    (step,) = [s for s in out["verdicts"][0]["chain"] if s["status"] == "forbidden"]
    assert (
        step["license"] == "LicenseRef-llama2"
        and step["clause"] == "commercial_use"
        and step["artifact"] == "l2:latest"
    )
    code, out = terms(owl, "l2-lora", "--use", "commercial", "--monthly-users", "1000")
    assert code == OBLIGATIONS  # §1.b.iii: the NOTICE line travels with what is distributed
    assert any(
        "Llama 2 is licensed under the LLAMA 2 Community License" in o
        for o in out["verdicts"][0]["obligations"]
    )
    code, _ = terms(owl, "l2-lora", "--use", "train-other-model")
    assert code == FORBIDDEN  # §1.b.v: no improving other LLMs with Llama 2 or its outputs


def test_apache_lora_trained_on_apache_data_is_allowed_with_notices(owl, tiny_llama, tmp_path) -> None:
    assert owl("import", licensed_model(tiny_llama, tmp_path / "m7", "apache-2.0"), "--name", "m7").code == 0
    assert owl("import", data_file(tmp_path / "d", "apache-2.0"), "--name", "apache-data").code == 0
    assert owl("tune", "m7", "apache-data", "--steps", "1", "--r", "2", "--name", "m7-lora").code == 0
    code, out = terms(owl, "m7-lora", "--use", "commercial")
    assert code == OBLIGATIONS  # Apache-2.0 §4: license copy and notices with redistributions
    assert all(s["status"] == "allowed" for s in out["verdicts"][0]["chain"])
    assert {s["via"].split(" ")[0] for s in out["verdicts"][0]["chain"]} >= {"weights", "data"}
    assert owl("terms", "m7-lora", "--use", "research").code == ALLOWED


def test_openrail_derivative_passes_use_restrictions_down(owl, tiny_llama, tiny_adapter, tmp_path) -> None:
    """CreativeML OpenRAIL-M §4.a/§5: the use restrictions go into every downstream agreement."""
    assert (
        owl(
            "import", licensed_model(tiny_llama, tmp_path / "sd", "creativeml-openrail-m"), "--name", "sd"
        ).code
        == 0
    )
    assert owl("import", adapter_on(tiny_adapter, tmp_path / "sd-lora", "sd"), "--name", "sd-lora").code == 0
    code, out = terms(owl, "sd-lora", "--use", "redistribute-weights")
    assert code == OBLIGATIONS
    assert any("pass the use restrictions down" in o for o in out["verdicts"][0]["obligations"])


def test_gguf_of_llama3_keeps_naming_and_attribution(owl, tiny_llama, tmp_path) -> None:
    """Llama 3 §1.b.i and §1.b.iii survive quantization: name prefix, "Built with", NOTICE."""
    pytest.importorskip("gguf")
    assert owl("import", licensed_model(tiny_llama, tmp_path / "l3", "llama3"), "--name", "l3").code == 0
    assert owl("quantize", "l3", "--to", "gguf-q8_0", "--no-eval", "--name", "l3-q8").code == 0
    code, out = terms(owl, "l3-q8", "--use", "redistribute-weights")
    assert code == OBLIGATIONS
    duties = " | ".join(out["verdicts"][0]["obligations"])
    assert 'begin derived model names with "Llama 3"' in duties and "Meta Llama 3 is licensed under" in duties
    assert 'display "Built with Meta Llama 3"' in duties  # §1.b.i.B
    inherited = [s for s in out["sources"] if s["path"] == ["quantized_from"]]
    assert [(s["artifact"], s["license"]) for s in inherited] == [("l3:latest", "LicenseRef-llama3")]
    assert (
        out["sources"][0]["via"] == "self" and out["sources"][0]["license"] == "LicenseRef-llama3"
    )  # in the GGUF


def test_apache_card_on_nc_data_is_flagged_and_not_commercial(owl, tiny_llama, tmp_path) -> None:
    assert owl("import", licensed_model(tiny_llama, tmp_path / "a", "apache-2.0"), "--name", "a").code == 0
    assert owl("import", data_file(tmp_path / "nc", "cc-by-nc-4.0"), "--name", "nc-data").code == 0
    assert owl("tune", "a", "nc-data", "--steps", "1", "--r", "2", "--name", "a-nc").code == 0
    r = owl("terms", "a-nc", "--use", "commercial")
    assert r.code == FORBIDDEN and "conflict" in r.err and "CC-BY-NC-4.0" in r.err
    assert "conservative reading" in r.out
    # asked before training: the same answer without spending the compute
    code, out = terms(owl, "a", "--use", "commercial", "--if-trained-on", "nc-data")
    assert code == FORBIDDEN and out["if_trained_on"] == "nc-data"


def test_unknown_license_upstream_is_never_allowed(owl, tiny_llama, tiny_adapter, tmp_path) -> None:
    assert owl("import", licensed_model(tiny_llama, tmp_path / "u", None), "--name", "u").code == 0
    assert owl("import", adapter_on(tiny_adapter, tmp_path / "u-lora", "u"), "--name", "u-lora").code == 0
    for use in ("commercial", "research", "redistribute-weights"):
        assert owl("terms", "u-lora", "--use", use).code == UNKNOWN


def test_dangling_and_cyclic_lineage_give_clear_answers(
    owl, owl_home, tiny_llama, tiny_adapter, tmp_path
) -> None:
    import sqlite3

    assert (
        owl(
            "import", adapter_on(tiny_adapter, tmp_path / "lonely", "never-imported"), "--name", "lonely"
        ).code
        == 0
    )
    code, out = terms(owl, "lonely", "--use", "commercial")
    assert code == UNKNOWN and out["verdicts"][0]["chain"][0]["artifact"] == "never-imported"
    assert owl("import", licensed_model(tiny_llama, tmp_path / "b", "mit"), "--name", "b").code == 0
    assert owl("import", adapter_on(tiny_adapter, tmp_path / "b-lora", "b"), "--name", "b-lora").code == 0
    digests = {a["names"][0]: a["digest"] for a in owl("ls", "--json").json()}
    db = sqlite3.connect(owl_home / "catalog.db")
    with db:  # a corrupted catalog: the base claims to be an adapter of its own adapter
        db.execute(
            "INSERT INTO edges (child, relation, parent) VALUES (?, 'adapter_of', ?)",
            (digests["b:latest"], digests["b-lora:latest"]),
        )
    db.close()
    r = owl("terms", "b-lora", "--use", "commercial")
    assert r.code not in (0, 10, 11, 12) and "loops back" in r.err and len(r.err.strip().splitlines()) == 1


def test_expressions_and_unknown_ids() -> None:
    from owlkit.terms.propagate import Source, _judge_source

    steps, _ = _judge_source(Source("x", None, "MIT OR CC-BY-NC-4.0", "self"), "commercial", None)
    assert [s.status for s in steps] == ["allowed"]  # OR: the licensee may pick MIT
    steps, _ = _judge_source(Source("x", None, "MIT AND CC-BY-NC-4.0", "self"), "commercial", None)
    assert "forbidden" in [s.status for s in steps]  # AND: both bind
    steps, _ = _judge_source(Source("x", None, "MIT AND (", "self"), "commercial", None)
    assert steps[0].status == "unknown" and "does not parse" in steps[0].reason
    steps, _ = _judge_source(Source("x", None, "LicenseRef-made-up", "self"), "commercial", None)
    assert steps[0].status == "unknown" and "knowledge base" in steps[0].reason
