"""A small node builder: adds nodes to a graph under one name prefix, with
collision-free names, so passes that append a whole subgraph (NMS
post-processing, input preprocessing) read like the ops they build."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from surgeon.graph.names import Namer


class GraphBuilder:
    """Adds nodes to ``graph`` (a main graph), with readable, collision-free names under one prefix.

    ``opset``: the model's default opset, for ops whose form changed across
    versions (:meth:`reduce_sum`).
    """

    def __init__(self, graph: gs.Graph, opset: int, prefix: str, *, at_front: bool = False) -> None:
        self.graph = graph
        self.opset = opset
        self.prefix = prefix
        # Nodes that feed the existing graph (preprocessing) go first, in the order built,
        # so the graph stays topologically sorted; post-processing is appended.
        self.position = 0 if at_front else None
        self.names = Namer(graph)

    def free(self, wanted: str) -> str:
        """``wanted``, or ``wanted_1``, ``wanted_2``... whichever no tensor or node uses yet."""
        return self.names.new(wanted)

    def name(self, base: str) -> str:
        return self.free(f"{self.prefix}/{base}")

    def const(self, base: str, values: Any, dtype: Any) -> gs.Constant:
        return gs.Constant(self.name(base), np.asarray(values, dtype=dtype))

    def op(self, op: str, inputs: list[gs.Tensor], attrs: dict[str, Any] | None = None,
           outputs: int | list[gs.Tensor] = 1, *, name: str | None = None) -> Any:
        """Add one node named ``name`` (default: the op) with ``outputs`` new tensors, or the given ones.

        Returns its output tensor, or the list when it has several.
        """
        base = name or op
        if isinstance(outputs, int):
            outputs = [gs.Variable(self.name(f"{base}_output_{i}" if outputs > 1 else f"{base}_output"))
                       for i in range(outputs)]
        node = gs.Node(op, name=self.name(base), attrs=attrs or {}, inputs=inputs, outputs=outputs)
        if self.position is None:
            self.graph.nodes.append(node)
        else:
            self.graph.nodes.insert(self.position, node)
            self.position += 1
        return node.outputs[0] if len(node.outputs) == 1 else list(node.outputs)

    def reduce_sum(self, x: gs.Tensor, axis: int, name: str, outputs: int | list[gs.Tensor] = 1) -> Any:
        # ReduceSum takes its axes as an input from opset 13 on, as an attribute before.
        if self.opset >= 13:
            return self.op("ReduceSum", [x, self.const(f"{name}_axes", [axis], np.int64)],
                           {"keepdims": 1}, outputs, name=name)
        return self.op("ReduceSum", [x], {"axes": [axis], "keepdims": 1}, outputs, name=name)

    def slice(self, x: gs.Tensor, start: int, end: int, axis: int, name: str) -> gs.Tensor:
        return self.op("Slice", [x, self.const(f"{name}_starts", [start], np.int64),
                                 self.const(f"{name}_ends", [end], np.int64),
                                 self.const(f"{name}_axes", [axis], np.int64)], name=name)
