"""The generated pass reference is up to date."""

import importlib.util

from util import ROOT, real_model_names


def test_pass_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "docs" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert (ROOT / "docs" / "passes.md").read_text() == generate.render(), \
        "docs/passes.md is stale: run python docs/generate.py"


def test_docs_and_recipe_comments_name_only_commands_that_exist():
    """A recipe comment once said `surgeon verify` before that command existed; every `surgeon X`
    in the docs and recipes must be a subcommand of the CLI (or a flag such as --version)."""
    import re

    from surgeon.cli import build_parser

    commands = set(next(a for a in build_parser()._subparsers._group_actions).choices)  # type: ignore[union-attr]
    texts = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "recipes").glob("*.yaml"))]
    unknown = []
    for path in texts:
        for m in re.finditer(r"`surgeon ([a-z][a-z_-]*)|^\s*#?\s*\$?\s*surgeon ([a-z][a-z_-]*)", path.read_text(),
                             flags=re.M):
            word = m.group(1) or m.group(2)
            if word not in commands:
                unknown.append(f"{path.relative_to(ROOT)}: surgeon {word}")
    assert unknown == []


def test_recipe_comments_name_models_that_ship_or_say_they_do_not():
    import re

    names = {n.rpartition("/")[2] for n in real_model_names(subfolders=True)} | {"model.onnx", "model_foo.onnx"}
    missing = []
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        text = path.read_text()
        comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
        for name in set(re.findall(r"(?<![.\w])[A-Za-z0-9_]+\.onnx\b(?!\.)", comments)) - {"torch.onnx"}:
            if name not in names and not re.search(rf"{re.escape(name)}: your own|no \w+ model ships", comments):
                missing.append(f"{path.name}: {name}")
    assert sorted(missing) == []
