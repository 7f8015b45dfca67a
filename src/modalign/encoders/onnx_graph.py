"""Graph surgery shared by the ONNX encoders (built-in DINOv2 and ``onnx:PATH``)."""

from __future__ import annotations

from typing import Any


def prune_graph(graph: Any, needed: set[str]) -> None:
    """Keep only the nodes, weights and value infos that the tensors in ``needed`` depend on (in place)."""
    needed = set(needed)
    kept = []
    for node in reversed(graph.node):  # exporters emit nodes in topological order
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    for field in (graph.initializer, graph.value_info):
        keep = [item for item in field if item.name in needed]
        del field[:]
        field.extend(keep)
