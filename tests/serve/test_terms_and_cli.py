"""Terms enforcement of a server declared `--use commercial` (at start and at adapter load), and the
`owl serve` command's refusals, each a one-line error before the port is bound."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from owlkit.errors import TermsForbid


def test_a_non_commercial_model_is_refused_at_start(serve_store: Any) -> None:
    from owlkit.serve.registry import Server

    with pytest.raises(TermsForbid) as e:
        Server.open(serve_store, ["tiny", "nc"], use="commercial")
    msg = str(e.value)
    assert "nc:latest may not be used for commercial" in msg and "CC-BY-NC-4.0" in msg
    assert "commercial_use" in msg and "\n" not in msg
    Server.open(serve_store, ["nc"], use="research").close()  # research use is fine
    # An adapter that declares nothing carries its base's terms: the refusal names that ancestor.
    from owlkit.serve.registry import terms_check

    with pytest.raises(
        TermsForbid, match=r"lora-on-nc:latest .* its ancestor nc:latest is CC-BY-NC-4.0 \(commercial_use"
    ):
        terms_check(serve_store, serve_store.find("lora-on-nc"), "commercial")


def test_commercial_server_lists_verdicts_warns_on_unknown_and_refuses_a_forbidding_adapter(
    serve_store: Any, start_server: Any
) -> None:
    with start_server(serve_store, ["tiny", "unlicensed"], [("lora", "lora")], use="commercial") as (
        url,
        server,
    ):
        assert any("unlicensed" in w and "unknown" in w for w in server.warnings)  # warned, not refused
        models = {m["id"]: m for m in httpx.get(url + "/v1/models").json()["data"]}
        assert models["tiny"]["terms"] == {"use": "commercial", "status": "allowed with obligations"}
        assert models["lora"]["terms"]["status"] == "allowed with obligations"  # inherits the base's
        assert models["unlicensed"]["terms"]["status"] == "unknown"
        r = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "nc", "lora_path": "lora-nc"})
        err = r.json()["error"]
        assert r.status_code == 403 and err["code"] == "terms_forbid"
        assert (
            "lora-nc:latest may not be used for commercial" in err["message"]
            and "commercial_use" in err["message"]
        )
        assert "nc" not in {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}


def test_owl_serve_refuses_before_binding(owl: Any, serve_folders: dict[str, Path]) -> None:
    assert owl("import", serve_folders["nc"], "--name", "ncm").code == 0
    r = owl("serve", "ncm", "--use", "commercial", "--port", "0")
    assert r.code == 5 and "ncm:latest may not be used for commercial" in r.err and "commercial_use" in r.err
    r = owl("serve", "ncm", "--adapter", "=x")
    assert r.code == 2 and "NAME=REF" in r.err
    r = owl("serve", "nothing-here")
    assert r.code == 3 and "not found" in r.err


def test_owl_serve_names_a_taken_port(owl: Any, serve_folders: dict[str, Path]) -> None:
    assert owl("import", serve_folders["tiny"], "--name", "t").code == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = owl("serve", "t", "--port", str(port))
    assert r.code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.err and "--port" in r.err
