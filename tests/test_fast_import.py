"""The fast importer builds the very graph gs's importer builds, object for object.

Both importers run on every real model in fixtures/ and every ONNX backend
node test; the two graphs are walked side by side and every object must
match its twin: same class, same attributes in the same order, equal values,
and the same identities (a tensor two nodes share is one object in both; the
function list every graph shares is one list in both).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx.backend.test.loader import load_model_tests
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx_graphsurgeon.util.misc import SynchronizedList
from util import real_model, real_model_names

import surgeon
from surgeon.graph.quiet import quiet_gs
from surgeon.io import fast_import
from surgeon.io.external import is_external, iter_model_tensors
from surgeon.io.load import _has_external


class _Twins:
    """Walks two object graphs side by side; ``where`` says which path differs."""

    def __init__(self) -> None:
        self.seen: dict[int, object] = {}
        self.seen_back: dict[int, object] = {}
        self.keep: list[object] = []  # keeps ids unique while comparing

    def pair(self, a: object, b: object, where: str) -> bool:
        """Record a <-> b; True when they are new (to compare), False when paired before."""
        known = self.seen.get(id(a))
        if known is not None:
            assert known is b, f"{where}: shared object is not shared the same way"
            return False
        assert id(b) not in self.seen_back, f"{where}: two objects became one"
        self.seen[id(a)] = b
        self.seen_back[id(b)] = a
        self.keep += [a, b]
        return True

    def same(self, a: object, b: object, where: str) -> None:
        """Compare iteratively (a chain of 100,000 nodes is that deep)."""
        self.todo = [(a, b, where)]
        while self.todo:
            self._one(*self.todo.pop())

    def _one(self, a: object, b: object, where: str) -> None:
        assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
        if isinstance(a, (gs.Graph, gs.Node, gs.Tensor, LazyValues)):
            if not self.pair(a, b, where):
                return
            assert list(vars(a)) == list(vars(b)), f"{where}: attributes {list(vars(a))} != {list(vars(b))}"
            for key, value in reversed(vars(a).items()):
                self.todo.append((value, vars(b)[key], f"{where}.{key}"))
        elif isinstance(a, SynchronizedList):
            assert self.pair(a, b, where), f"{where}: a synchronized list is shared"
            assert a.field_name == b.field_name, where
            self.todo.append((a.parent_obj, b.parent_obj, f"{where}.parent_obj"))
            self._items(a, b, where)
        elif isinstance(a, (list, tuple)):
            if isinstance(a, list) and not self.pair(a, b, where):
                return  # a list shared by several graphs (gs's functions list)
            self._items(a, b, where)
        elif isinstance(a, (dict, OrderedDict)):
            assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
            for key in reversed(list(a)):
                self.todo.append((a[key], b[key], f"{where}[{key!r}]"))
        elif isinstance(a, onnx.TensorProto | onnx.SparseTensorProto):
            assert a.SerializeToString() == b.SerializeToString(), where
        elif type(a).__name__ in ("RepeatedScalarContainer", "RepeatedCompositeContainer"):
            assert list(a) == list(b), where
        elif isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), where
        else:
            assert a == b, f"{where}: {a!r} != {b!r}"

    def _items(self, a, b, where: str) -> None:
        assert len(a) == len(b), f"{where}: {len(a)} items != {len(b)}"
        for i in reversed(range(len(a))):
            self.todo.append((a[i], b[i], f"{where}[{i}]"))


def assert_same_import(proto: onnx.ModelProto) -> None:
    fast = fast_import.import_onnx(proto)
    assert fast is not None, "the fast importer fell back to gs"
    with quiet_gs():
        slow = gs.import_onnx(proto)
    _Twins().same(slow, fast, "graph")


def _real_models():
    return real_model_names(subfolders=True)


@pytest.mark.parametrize("name", _real_models())
def test_fast_import_equals_gs_on_real_models(name):
    path = real_model(name)
    proto = onnx.load(path, load_external_data=False)
    assert_same_import(proto)
    assert _has_external(proto) == any(is_external(t) for t in iter_model_tensors(proto))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # raised by onnx while it builds the cases
def test_fast_import_equals_gs_on_every_backend_node_test():
    failures = []
    cases = load_model_tests(kind="node")
    assert len(cases) > 1000
    for case in cases:
        try:
            assert_same_import(case.model)
        except BaseException as exc:  # collect all, report together
            failures.append(f"{case.name}: {str(exc).splitlines()[0]}")
    assert not failures, f"{len(failures)} of {len(cases)} node tests differ:\n" + "\n".join(failures[:20])


def test_edge_cases_equal_gs():
    """Names gs resolves in particular ways: a subgraph reading a tensor produced later in the
    outer graph, dangling inputs, repeated and omitted optional inputs, a value_info for an
    input, an initializer shadowing an outer tensor, and a duplicated local function."""
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 18, "local" : 1]>
        g (float[N, 4] x, bool c) => (float[N, 4] y, float[N, 4] z) <float[1] w = {1.0}> {
            y = If (c) <then_branch = t () => (float[N, 4] ty) <float[1] x = {3.0}> { ty = Add (late, x) },
                        else_branch = e () => (float[N, 4] ey) { ey = Sub (x, nothing) }>
            late = Mul (x, x)
            z, = local.F (late, w)
            u = Clip (x, , )
        }
        <domain: "local", opset_import: ["" : 18]>
        F (a, b) => (o) { o = Add (a, b) }
    """)
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None))
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("late", onnx.TensorProto.FLOAT, [2]))
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("late", onnx.TensorProto.DOUBLE, []))
    model.functions.append(model.functions[0])
    model.graph.node[1].doc_string = "kept by surgeon, not by gs"
    assert_same_import(model)


def test_untested_gs_version_falls_back(monkeypatch):
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 18]>
        g (float[2] x) => (float[2] y) { y = Relu (x) }
    """)
    monkeypatch.setattr(gs, "__version__", "0.9.0")
    assert fast_import.import_onnx(model) is None
    loaded = surgeon.load(model)
    assert [n.op for n in loaded.graph.nodes] == ["Relu"]


def test_fast_path_failure_falls_back_to_gs():
    """An attribute string that is not UTF-8: the fast path gives up, gs's importer reports it."""
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 18]>
        g (float[2] x) => (float[2] y) { y = Relu (x) }
    """)
    model.graph.node[0].attribute.append(onnx.helper.make_attribute("bad", b"\xff\xfe"))
    assert fast_import.import_onnx(model) is None
    with pytest.raises(surgeon.SurgeonError, match="cannot be imported: UnicodeDecodeError"):
        surgeon.load(model)


def test_external_weights_stay_lazy(tmp_path):
    weights = onnx.numpy_helper.from_array(np.arange(4096, dtype=np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Add", ["x", "w"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4096])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4096])],
                                   [weights])
    path = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph), path, save_as_external_data=True, location="m.data",
              size_threshold=0)
    proto = onnx.load(path, load_external_data=False)
    assert_same_import(proto)
    assert _has_external(proto)
    model = surgeon.load(path)
    const = model.graph.nodes[0].inputs[1]
    assert type(const._values).__name__ == "ExternalValues"
    assert np.array_equal(const.values, np.arange(4096, dtype=np.float32))
    assert os.path.exists(tmp_path / "m.data")
