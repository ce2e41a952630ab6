"""set_metadata: model-level fields change, nothing else does."""

from __future__ import annotations

import onnx
import onnx.parser
import pytest
from util import RECIPES, assert_same_outputs, random_inputs, real_model

import surgeon
from surgeon.io.export import to_proto
from surgeon.passes.registry import registry
from surgeon.passes.runner import run_step
from surgeon.recipe.model import Step

SMALL = """<ir_version: 8, opset_import: ["" : 17], producer_name: "exporter", producer_version: "1.0",
            metadata_props: ["license": "MIT", "author": "someone", "commit": "abc123"]>
agraph (float[N, 3] x) => (float[N, 3] y) { y = Relu (x) }"""


def step(**params) -> Step:
    return Step("set_metadata", params)


def edit(model: surgeon.Model, **params):
    return run_step(model, step(**params))


def expected(proto: onnx.ModelProto, **fields) -> bytes:
    """``proto`` with only the given model-level fields changed (props: the full new list)."""
    want = onnx.ModelProto()
    want.CopyFrom(proto)
    props = fields.pop("props", None)
    for key, value in fields.items():
        setattr(want, key, value)
    if props is not None:
        del want.metadata_props[:]
        for k, v in props.items():
            want.metadata_props.add(key=k, value=v)
    return want.SerializeToString()


def test_sets_every_field_and_leaves_the_rest_of_a_real_model_alone():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    before = to_proto(model)
    report = edit(model, producer_name="surgeon", producer_version="0.1.0", doc_string="Conv-ReLU x2",
                  model_version=3, domain="com.example", props={"license": "Apache-2.0", "stage": "prod"})
    after = to_proto(model)
    assert after.SerializeToString() == expected(
        before, producer_name="surgeon", producer_version="0.1.0", doc_string="Conv-ReLU x2", model_version=3,
        domain="com.example", props={"license": "Apache-2.0", "stage": "prod"})
    assert report.notes == ["set producer_name, producer_version, doc_string, model_version, domain, "
                            "props.license, props.stage"]
    assert report.details == {"set": ["producer_name", "producer_version", "doc_string", "model_version", "domain",
                                      "props.license", "props.stage"], "removed": []}
    assert report.summary() == "step 1 (set_metadata): changed"
    assert_same_outputs(path, after, random_inputs(path), exact=True)


def test_removes_a_key_of_a_real_model():
    path = real_model("ch_PP-OCRv4_rec_infer.onnx")  # paddle2onnx stores the OCR alphabet as 'character'
    model = surgeon.load(path)
    before = to_proto(model)
    assert "character" in model.metadata_props
    report = edit(model, remove=["character"], props={"alphabet": "dropped"})
    after = to_proto(model)
    assert after.SerializeToString() == expected(before, props={"alphabet": "dropped"})
    assert report.notes == ["set props.alphabet", "removed metadata key(s) character"]
    assert_same_outputs(path, after, random_inputs(path), exact=True)


def test_overwriting_keeps_the_key_order_and_appends_new_keys():
    model = surgeon.load(onnx.parser.parse_model(SMALL))
    edit(model, props={"zeta": "1", "license": "Apache-2.0"}, remove=["author"])
    assert list(model.metadata_props.items()) == [("license", "Apache-2.0"), ("commit", "abc123"), ("zeta", "1")]


def test_same_values_change_nothing():
    model = surgeon.load(onnx.parser.parse_model(SMALL))
    before = to_proto(model).SerializeToString()
    report = edit(model, producer_name="exporter", producer_version="1.0", props={"license": "MIT"})
    assert to_proto(model).SerializeToString() == before
    assert report.details == {"set": [], "removed": []} and not report.changed
    assert report.summary() == "step 1 (set_metadata): no change"


def test_empty_doc_string_clears_it():
    model = surgeon.load(onnx.parser.parse_model(SMALL))
    model.doc_string = "old"
    edit(model, doc_string="")
    assert to_proto(model).doc_string == ""


def test_removing_a_missing_key_is_an_error_with_suggestions():
    model = surgeon.load(onnx.parser.parse_model(SMALL))
    before = to_proto(model).SerializeToString()
    with pytest.raises(surgeon.StepError) as excinfo:
        edit(model, remove=["licence"])
    assert str(excinfo.value) == (
        "error: step 1 (set_metadata): cannot remove metadata key 'licence': the model has no such key\n"
        "  hint: did you mean 'license'?\n"
        "        the model's metadata keys: 'license', 'author', 'commit'; set allow_missing: true if the key "
        "may legitimately be absent")
    assert to_proto(model).SerializeToString() == before


def test_allow_missing_removes_what_exists_and_notes_the_rest():
    model = surgeon.load(onnx.parser.parse_model(SMALL))
    report = edit(model, remove=["commit", "gone"], allow_missing=True)
    assert model.metadata_props == {"license": "MIT", "author": "someone"}
    assert report.notes == ["removed metadata key(s) commit",
                            "metadata key(s) not present (allowed: allow_missing): gone"]


@pytest.mark.parametrize("params, message", [
    ({}, "error: step 1 (set_metadata): set_metadata was given nothing to set or remove\n"
         "  hint: give at least one of: producer_name, producer_version, doc_string, model_version, domain, "
         "props, remove"),
    ({"props": {"license": "x"}, "remove": ["license"]},
     "error: step 1 (set_metadata): key(s) 'license' are both set in 'props' and listed in 'remove'\n"
     "  hint: keep each key in only one of them"),
    ({"props": {"": "x"}}, "error: step 1 (set_metadata): metadata keys cannot be empty\n"
                           "  hint: give every entry of props/remove a name"),
    ({"model_version": -1},
     "error: step 1 (set_metadata): parameter 'model_version': must be between 0 and 9223372036854775807, "
     "got -1"),
])
def test_refuses_bad_parameters_without_changing_anything(params, message):
    model = surgeon.load(onnx.parser.parse_model(SMALL))
    before = to_proto(model).SerializeToString()
    with pytest.raises(surgeon.StepError) as excinfo:
        edit(model, **params)
    assert str(excinfo.value) == message
    assert to_proto(model).SerializeToString() == before


def test_yaml_numbers_as_values_are_refused_with_a_hint():
    with pytest.raises(surgeon.RecipeError) as excinfo:
        surgeon.parse_recipe("version: 1\nsteps:\n  - pass: set_metadata\n    with: {props: {version: 1.10}}\n",
                             "r.yaml")
    assert str(excinfo.value) == (
        "r.yaml:4:29: error: parameter 'props.version': expected a string, got 1.1\n"
        "  hint: quote the value to keep it a string (YAML 1.1 reads 010 as 8 and 22:30 as 1350)")


def test_node_and_graph_metadata_of_a_dynamo_export_survive():
    path = real_model("transformer_encoder_dynamo.onnx")  # node and graph metadata from the dynamo exporter
    model = surgeon.load(path)
    before = to_proto(model)
    edit(model, props={"k": "v"})
    assert to_proto(model).SerializeToString() == expected(before, props={"k": "v"})


def test_docstring_example_runs_on_a_real_model(tmp_path):
    model = surgeon.load(real_model("model.onnx"))
    surgeon.apply(surgeon.parse_recipe(registry.get("set_metadata").example()), model)
    assert (model.producer_name, model.model_version) == ("surgeon", 2)
    assert model.metadata_props == {"license": "Apache-2.0", "source": "model.onnx, legacy exporter"}
    surgeon.save(model, tmp_path / "out.onnx")


def test_ready_recipe_runs_on_a_real_model(tmp_path):
    path = real_model("model_dynamo.onnx")
    model = surgeon.load(path)
    result = surgeon.apply(RECIPES / "set_metadata.yaml", model)
    assert result.steps[0].changed
    saved = onnx.load(surgeon.save(model, tmp_path / "out.onnx").path)
    assert saved.producer_name == "surgeon"
    assert {p.key for p in saved.metadata_props} >= {"license", "source"}
    assert_same_outputs(path, tmp_path / "out.onnx", random_inputs(path), exact=True)
