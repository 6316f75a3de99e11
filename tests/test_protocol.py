"""Codecs of modelload.protocol: JSON encoding, tensor conversion, the binary tensor extension."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from modelload import protocol
from modelload.manifest import Signature, TensorSpec
from modelload.protocol import ProtocolError


def test_dumps_handles_numpy_and_never_emits_nan() -> None:
    doc = {
        "f": np.array([1.5, math.nan, -math.inf], dtype=np.float32),
        "t": np.arange(6).reshape(2, 3).T,  # not contiguous
        "s": np.array(["a", "b"]),
        "i": np.int64(7),
        "b": b"raw",
    }
    text = protocol.dumps(doc).decode()
    assert json.loads(text, parse_constant=pytest.fail) == {
        "f": [1.5, None, None],
        "t": [[0, 3], [1, 4], [2, 5]],
        "s": ["a", "b"],
        "i": 7,
        "b": "raw",
    }


def test_to_array_is_strict_about_datatypes() -> None:
    assert protocol.to_array([[1, 2]], "FP32", "x").dtype == np.float32
    nan = protocol.to_array([1.0, None], "FP64", "x")
    assert math.isnan(nan[1]) and nan[0] == 1.0
    assert protocol.to_array(["a", "b"], "BYTES", "x").tolist() == ["a", "b"]
    for data, datatype in [
        ([1.5], "INT64"),
        (["1"], "FP64"),
        ([300], "UINT8"),
        ([-1], "UINT32"),
        ([True], "FP32"),
        ([1], "BYTES"),
        ([[1, 2], [3]], "FP64"),
    ]:
        with pytest.raises(ProtocolError) as info:
            protocol.to_array(data, datatype, "x")
        assert info.value.status == 422, (data, datatype)


def _binary_request(arrays: dict[str, tuple[str, np.ndarray | list[bytes]]]) -> tuple[bytes, int]:
    inputs, blobs = [], []
    for name, (datatype, value) in arrays.items():
        if datatype == "BYTES":
            blob = b"".join(struct.pack("<I", len(v)) + v for v in value)  # type: ignore[arg-type]
            shape = [len(value)]
        else:
            array = np.asarray(value)
            blob, shape = array.astype(array.dtype.newbyteorder("<")).tobytes(), list(array.shape)
        inputs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(blobs), len(header)


def test_binary_tensor_extension_round_trip() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, length = _binary_request({"x": ("FP32", x), "words": ("BYTES", [b"hi", b"there"])})
    request = protocol.parse_infer_request(body, length, None)
    assert request.inputs["x"].tolist() == x.tolist()
    assert request.inputs["words"].tolist() == [b"hi", b"there"]
    outputs = protocol.split_outputs({"y": x * 2, "labels": np.array(["a", "bc"])}, None)
    content, json_length = protocol.encode_infer_response("m", "1", request, outputs)
    assert json_length is not None
    header = json.loads(content[:json_length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert header["outputs"][0]["datatype"] == "FP32"
    assert header["outputs"][1]["datatype"] == "BYTES"
    blob = content[json_length:]
    y = np.frombuffer(blob[: sizes[0]], dtype="<f4").reshape(header["outputs"][0]["shape"])
    assert y.tolist() == (x * 2).tolist()
    assert blob[sizes[0] :] == struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc"


def test_binary_size_must_match_the_shape() -> None:
    body, length = _binary_request({"x": ("FP64", np.zeros((2, 4)))})
    doc = json.loads(body[:length])
    doc["inputs"][0]["shape"] = [3, 4]
    header = json.dumps(doc).encode()
    with pytest.raises(ProtocolError) as info:
        protocol.parse_infer_request(header + body[length:], len(header), None)
    assert info.value.status == 422


def test_signature_checks_names_datatypes_and_shapes() -> None:
    signature = Signature(
        inputs=(TensorSpec("a", "INT32", (-1, 2)), TensorSpec("b", "FP64", (-1,))),
        outputs=(TensorSpec("p", "FP64", (-1,)), TensorSpec("q", "INT64", (-1,))),
    )
    ok = {
        "inputs": [
            {"name": "a", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]},
            {"name": "b", "datatype": "FP64", "shape": [1], "data": [0.5]},
        ],
        "outputs": [{"name": "q"}],
    }
    request = protocol.parse_infer_request(json.dumps(ok).encode(), None, signature)
    assert set(request.model_input()) == {"a", "b"}
    named = protocol.split_outputs((np.array([1.0]), np.array([2])), signature)
    content, json_length = protocol.encode_infer_response("m", "1", request, named)
    assert json_length is None
    assert json.loads(content)["outputs"] == [
        {"name": "q", "datatype": "INT64", "shape": [1], "data": [2]}
    ]
    missing = {"inputs": ok["inputs"][:1]}
    with pytest.raises(ProtocolError) as info:
        protocol.parse_infer_request(json.dumps(missing).encode(), None, signature)
    assert info.value.status == 422 and "b" in info.value.message
    unknown_output = {"inputs": ok["inputs"], "outputs": [{"name": "zzz"}]}
    request = protocol.parse_infer_request(json.dumps(unknown_output).encode(), None, signature)
    with pytest.raises(ProtocolError) as info:
        protocol.encode_infer_response("m", "1", request, named)
    assert info.value.status == 400
