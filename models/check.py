"""Check the architecture-only ONNX models in this folder.

Needs only ``onnx`` (a dependency of partopt itself), not TensorFlow:

    python models/check.py                 # every models/*.onnx
    python models/check.py models/bert_base.onnx --markdown

For each file it verifies that

* the graph loads without its weights (``onnx.load(path, load_external_data=False)``),
* ``onnx.checker`` accepts it,
* after the symbolic batch dimension is set to 1, ``onnx.shape_inference`` (strict mode)
  gives every node output a fully static shape -- what partopt needs for transfer sizes,
* no floating-point tensor (initializer or ``Constant`` value) still holds its data
  inside the graph file: weights are external and the weight file is not shipped,

and prints a summary: nodes, parameters, opset, inputs and outputs. Exit status 1 if any
file fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto

HERE = Path(__file__).resolve().parent

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


def graph_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, TensorProto]]:
    """Yield ("initializer" | "constant", tensor) for every stored tensor, subgraphs included."""
    for tensor in graph.initializer:
        yield "initializer", tensor
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.type == AttributeProto.TENSOR:
                yield "constant", attr.t
            elif attr.type == AttributeProto.GRAPH:
                yield from graph_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from graph_tensors(sub)


def count_nodes(graph: onnx.GraphProto) -> int:
    """Nodes of the main graph (subgraph nodes are not counted)."""
    return len(graph.node)


def shape_str(value: onnx.ValueInfoProto) -> str:
    dims = [d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim]
    dtype = TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()
    return f"{value.name}: {dtype}[{', '.join(dims)}]"


def fix_batch(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    """Copy of ``model`` whose graph inputs/outputs have a fixed leading (batch) dimension.

    Intermediate value_info is dropped so that inference starts from the inputs alone.
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in list(fixed.graph.input) + list(fixed.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    del fixed.graph.value_info[:]
    return fixed


def inline_float_bytes(model: onnx.ModelProto) -> int:
    """Bytes of floating-point tensor data still stored inside the graph file."""
    total = 0
    for _, tensor in graph_tensors(model.graph):
        if tensor.data_type in FLOAT_TYPES and tensor.data_location != TensorProto.EXTERNAL:
            total += len(tensor.raw_data) + 4 * len(tensor.float_data)
            total += 8 * len(tensor.double_data) + 4 * len(tensor.int32_data)
    return total


def parameter_count(model: onnx.ModelProto) -> int:
    """Elements of all floating-point initializers and Constant values (known without data)."""
    return sum(
        int(np.prod(tensor.dims, dtype=np.int64))
        for _, tensor in graph_tensors(model.graph)
        if tensor.data_type in FLOAT_TYPES
    )


def run_checker(path: Path, model: onnx.ModelProto) -> None:
    """``onnx.checker.check_model`` insists that external weight files exist (and the
    in-memory variant needs all data), so check a copy beside sparse stand-in files of the
    right length: this validates the graph without materialising any weights."""
    ends: dict[str, int] = {}
    for _, tensor in graph_tensors(model.graph):
        if tensor.data_location == TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            end = int(info.get("offset", 0)) + int(info.get("length", 0))
            ends[info["location"]] = max(ends.get(info["location"], 0), end)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        for location, end in ends.items():
            with open(Path(tmp) / location, "wb") as f:
                f.truncate(end)  # sparse: no disk space used
        onnx.checker.check_model(str(copy))


def check_file(path: Path) -> dict:
    """Run all checks on one file; raise AssertionError on the first failure."""
    model = onnx.load(str(path), load_external_data=False)
    run_checker(path, model)
    inferred = onnx.shape_inference.infer_shapes(
        fix_batch(model), check_type=True, strict_mode=True, data_prop=True
    )
    known = {
        v.name: v
        for v in list(inferred.graph.value_info)
        + list(inferred.graph.output)
        + list(inferred.graph.input)
    }
    unresolved = []
    for node in inferred.graph.node:
        for name in node.output:
            if not name:
                continue
            value = known.get(name)
            dims = value.type.tensor_type.shape.dim if value is not None else None
            if (
                value is None
                or not value.type.tensor_type.HasField("shape")
                or any(not d.HasField("dim_value") for d in dims)
            ):
                unresolved.append(name)
    assert not unresolved, (
        f"{path.name}: {len(unresolved)} outputs without static shape, e.g. {unresolved[:3]}"
    )
    inline = inline_float_bytes(model)
    assert inline == 0, f"{path.name}: {inline} bytes of float data still inline"
    constants = [n for n in model.graph.node if n.op_type == "Constant"]
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    return {
        "file": path.name,
        "size_kb": path.stat().st_size / 1024,
        "nodes": count_nodes(model.graph),
        "constant_nodes": len(constants),
        "params": parameter_count(model),
        "opset": opsets.get("ai.onnx"),
        "ir_version": model.ir_version,
        "inputs": [shape_str(v) for v in model.graph.input],
        "outputs": [shape_str(v) for v in model.graph.output],
    }


def print_summary(rows: list[dict], markdown: bool) -> None:
    if markdown:
        print("| file | input(s) | output(s) | opset | nodes | parameters | size |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(
                f"| `{r['file']}` | {'<br>'.join(f'`{s}`' for s in r['inputs'])} "
                f"| {'<br>'.join(f'`{s}`' for s in r['outputs'])} | {r['opset']} "
                f"| {r['nodes']} | {r['params']:,} | {r['size_kb']:.0f} KB |"
            )
        return
    for r in rows:
        print(
            f"{r['file']:24s} {r['size_kb']:7.1f} KB  nodes={r['nodes']:5d}  "
            f"Constant nodes={r['constant_nodes']}  params={r['params']:,}  "
            f"opset={r['opset']}  ir={r['ir_version']}"
        )
        print(f"{'':24s} in:  {'; '.join(r['inputs'])}")
        print(f"{'':24s} out: {'; '.join(r['outputs'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="ONNX files (default: models/*.onnx)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(HERE.glob("*.onnx"))
    rows, failed = [], 0
    for path in paths:
        try:
            rows.append(check_file(path))
        except Exception as exc:  # report every file, then fail
            failed += 1
            print(f"FAIL {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print_summary(rows, args.markdown)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
