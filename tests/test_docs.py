"""The generated pass reference is up to date."""

import importlib.util

from util import ROOT


def test_pass_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "docs" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert (ROOT / "docs" / "passes.md").read_text() == generate.render(), \
        "docs/passes.md is stale: run python docs/generate.py"
