"""The one subgraph of a .tflite file, read with the `tflite` package: its operators in run order and
its constant tensors in torch's layout. Shared by the converters in this folder (conversion only)."""

from __future__ import annotations

import numpy as np

_DTYPES = {"FLOAT16": np.float16, "FLOAT32": np.float32}
CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


class Graph:
    """The one subgraph of a .tflite file: tensors and their constant values."""

    def __init__(self, data: bytes) -> None:
        import tflite

        self.model = tflite.Model.GetRootAsModel(data, 0)
        self.graph = self.model.Subgraphs(0)
        ops = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self.ops = []
        for k in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(k)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            self.ops.append((ops[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())],
                             [int(i) for i in op.InputsAsNumpy()], [int(i) for i in op.OutputsAsNumpy()]))
        self.producer = {outs[0]: (name, ins) for name, ins, outs in self.ops}
        self.types = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
        self.outputs = [int(i) for i in self.graph.OutputsAsNumpy()]

    def constant(self, index: int) -> np.ndarray:
        """A constant tensor's value, following DEQUANTIZE (fp16 kept as is) and DENSIFY back to the
        stored buffer."""
        if index in self.producer:
            name, ins = self.producer[index]
            assert name in ("DEQUANTIZE", "DENSIFY"), name
            return self.constant(ins[0])
        tensor = self.graph.Tensors(index)
        raw = self.model.Buffers(tensor.Buffer()).DataAsNumpy().tobytes()
        values = np.frombuffer(raw, _DTYPES[self.types[tensor.Type()]])
        shape = tuple(tensor.ShapeAsNumpy())
        return densify(tensor.Sparsity(), values, shape) if tensor.Sparsity() else values.reshape(shape)

    def convolution(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(kernel in torch's OIHW layout, bias) of operator `k`, a CONV_2D or DEPTHWISE_CONV_2D."""
        name, ins, _ = self.ops[k]
        kernel, bias = self.constant(ins[1]), self.constant(ins[2])
        # TFLite: conv (O, H, W, I), depthwise (1, H, W, C); torch: (O, I, H, W), (C, 1, H, W).
        return kernel.transpose((0, 3, 1, 2) if name == "CONV_2D" else (3, 0, 1, 2)), bias

    def convolutions(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every convolution's (kernel, bias), in run order."""
        return [self.convolution(k) for k, (name, _, _) in enumerate(self.ops) if name in CONVOLUTIONS]


def densify(sparsity, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """TFLite's sparse layout as these files use it: leading dimensions dense, the last one CSR
    (row segments and column indices), identity traversal order, no blocks."""
    dims = [sparsity.DimMetadata(d) for d in range(sparsity.DimMetadataLength())]
    assert list(sparsity.TraversalOrderAsNumpy()) == list(range(len(shape))) and not sparsity.BlockMapLength()
    assert all(d.Format() == 0 for d in dims[:-1]) and dims[-1].Format() == 1
    segments, indices = (_index_vector(dims[-1], which) for which in ("Segments", "Indices"))
    rows = int(np.prod(shape[:-1]))
    dense = np.zeros((rows, shape[-1]), values.dtype)
    for r in range(rows):
        cols = indices[segments[r]:segments[r + 1]]
        dense[r, cols] = values[segments[r]:segments[r + 1]]
    return dense.reshape(shape)


def _index_vector(dim, which: str) -> np.ndarray:
    import tflite

    kind = getattr(dim, f"Array{which}Type")()
    table = getattr(dim, f"Array{which}")()
    vector = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}[kind]()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy().astype(np.int64)
