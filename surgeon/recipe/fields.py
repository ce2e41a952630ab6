"""Every key a recipe may contain, declared once.

The parser (YAML and ``Recipe.from_steps``), the validator, the JSON schema
and the messages' "allowed keys" lists all read these tables; a new recipe
key is added here and nowhere else. Each :class:`Key` has its type (checked
with :func:`surgeon.recipe.types.check_type`, ranges included), a one-line
doc (shown in the JSON schema) and the wrong names people reach for
(``params`` for ``with``), which turn into did-you-mean hints.

The recipe format is a public API: add keys as optional, never rename one
without keeping the old name working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from surgeon.errors import did_you_mean
from surgeon.recipe.types import Min

SUPPORTED_VERSIONS = (1,)


@dataclass(frozen=True)
class Key:
    """One allowed key of a recipe mapping."""

    name: str
    annotation: Any
    doc: str
    required: bool = False
    aliases: tuple[str, ...] = ()
    """Names people write instead of this one; an unknown key close to one of them suggests ``name``."""


def _table(*keys: Key) -> dict[str, Key]:
    return {key.name: key for key in keys}


TOP_KEYS = _table(
    Key("version", int, "recipe format version", required=True),
    Key("description", str, "what the recipe does and why, for reviewers"),
    Key("plugins", list[str], "modules (dotted names) or .py files (relative to the recipe) that register passes"),
    Key("vars", dict[str, Any], "variables with their defaults, used as ${name} in steps; --set name=value "
        "overrides one"),
    Key("verify", dict[str, Any], "compare the edited model's outputs with the input's in onnxruntime"),
    Key("custom_ops", list[dict[str, Any]], "what custom (plugin) ops do to the dtypes and shapes of their "
        "outputs, so shape inference and folding get past them", aliases=("custom_op", "plugin_ops")),
    Key("steps", list[dict[str, Any]], "the passes to run, in order", required=True),
)

STEP_KEYS = _table(
    Key("id", str, "a name for the step, unique in the recipe"),
    Key("pass", str, "the pass to run", required=True, aliases=("type",)),
    Key("with", dict[str, Any], "the pass's parameters",
        aliases=("params", "parameters", "args", "arguments")),
    Key("allow_missing", bool, "the step may match nothing (for passes that select nodes)"),
    Key("expect", dict[str, Any], "what the step must have done; checked after it runs"),
)

VERIFY_FIELDS = _table(
    Key("rtol", Annotated[float, Min(0)], "relative tolerance"),
    Key("atol", Annotated[float, Min(0)], "absolute tolerance"),
    Key("dims", dict[str, Annotated[int, Min(1)]], "values of the symbolic dimensions, e.g. {N: 2}"),
    Key("inputs", str, "an .npz file of inputs, relative to the recipe"),
    Key("reference", str, "the model to compare with (default: the input model), relative to the recipe"),
)

CUSTOM_OP_FIELDS = _table(
    Key("op", str, "the op type, e.g. FooOp", required=True, aliases=("op_type", "type", "name")),
    Key("domain", str, "the op's domain (default: '')"),
    Key("outputs", list[dict[str, Any]], "per output, in order: {dtype, shape}", required=True),
)

OUTPUT_FIELDS = _table(
    Key("dtype", str, "inputK (the dtype of input K) or a dtype name such as float32", required=True,
        aliases=("type", "elem_type")),
    Key("shape", str | list[int | str], "inputK (the shape of input K) or a list of dims: inputK[i], a number, "
        "or an integer attribute's name", aliases=("dims",)),
)

EXPECT_FIELDS = _table(
    Key("removed", Annotated[int, Min(0)], "exactly this many nodes removed"),
    Key("added", Annotated[int, Min(0)], "exactly this many nodes added"),
    Key("min_removed", Annotated[int, Min(0)], "at least this many nodes removed"),
    Key("ops_absent", list[str], "ops no node may have afterwards"),
    Key("inputs", list[str], "the graph input names afterwards, in order"),
    Key("outputs", list[str], "the graph output names afterwards, in order"),
    Key("shapes", dict[str, list[int | str | None]], "tensor name -> its shape afterwards"),
    Key("changed", bool, "whether the step changed anything (attributes and values included)"),
)


def key_suggestion(key: Any, keys: dict[str, Key]) -> str | None:
    """``did you mean 'with'?`` for an unknown key close to a key or to one of its aliases."""
    aliases = {alias: k.name for k in keys.values() for alias in k.aliases}
    close = did_you_mean(str(key), [*keys, *aliases])
    meant = dict.fromkeys(aliases.get(c, c) for c in close)
    return "did you mean " + ", ".join(f"'{m}'" for m in meant) + "?" if meant else None


def key_list(keys: dict[str, Key]) -> str:
    return ", ".join(keys)
