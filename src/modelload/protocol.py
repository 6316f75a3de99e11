"""Request and response codecs: ``{"instances": [...]}`` JSON and the Open Inference Protocol.

The Open Inference Protocol (KServe V2, Triton) REST form is supported with JSON tensors
and with Triton's binary tensor extension (a JSON header of
``Inference-Header-Content-Length`` bytes followed by raw little-endian tensor bytes),
which ``tritonclient`` uses by default.

Everything here is plain functions over bytes, dicts and numpy arrays; the routes in
:mod:`modelload.app` only glue them together. Invalid requests raise
:class:`ProtocolError` with the HTTP status to answer (400 malformed, 404 unknown model,
413 too large, 422 wrong shape or datatype for the model's signature).

JSON encoding uses orjson. NaN, Infinity and -Infinity are encoded as ``null`` (JSON has
no literal for them); on input, ``null`` in a floating-point tensor becomes NaN.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with every ML library we load
    np = None  # type: ignore[assignment]

from modelload.manifest import Signature, TensorSpec

__all__ = [
    "HEADER_LENGTH",
    "InferRequest",
    "ProtocolError",
    "decode_json",
    "dumps",
    "encode_infer_response",
    "model_metadata",
    "parse_infer_request",
    "parse_instances",
    "split_outputs",
]

#: Header naming the JSON part's length in a binary-extension request or response.
HEADER_LENGTH = "inference-header-content-length"

#: V2 datatype -> numpy dtype name
V2_TO_NUMPY: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
_NUMPY_TO_V2 = {dt: name for name, dt in V2_TO_NUMPY.items() if name != "BYTES"}
# numpy kinds a JSON array may decode to for each family of V2 datatypes
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class ProtocolError(Exception):
    """A request the server answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# ---------------------------------------------------------------------------- JSON


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays orjson does not take natively, numpy scalars
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(obj: Any) -> bytes:
    """JSON bytes; numpy arrays and scalars included, NaN and infinities as ``null``."""
    return orjson.dumps(obj, default=_default, option=_JSON_OPTIONS)


def decode_json(body: bytes) -> Any:
    """Parse a request body, raising 400 when it is empty or not JSON."""
    if not body:
        raise ProtocolError(400, "the request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(400, f"the request body is not valid JSON: {exc}") from None


# ---------------------------------------------------------------------------- tensors


def v2_datatype(array: np.ndarray) -> str:
    """The V2 datatype name for a numpy array (strings and objects are ``BYTES``)."""
    return _NUMPY_TO_V2.get(array.dtype.name, "BYTES")


def _shape_fits(shape: Sequence[int], spec: Sequence[int]) -> bool:
    return len(shape) == len(spec) and all(s == d or s == -1 for s, d in zip(spec, shape))


def check_spec(array: np.ndarray, spec: TensorSpec, where: str) -> None:
    """422 unless ``array`` has the shape (``-1`` = any size) declared by ``spec``."""
    if spec.shape and not _shape_fits(array.shape, spec.shape):
        raise ProtocolError(
            422,
            f"{where}: shape {list(array.shape)} does not match the model's signature "
            f"{spec.name!r} shape {list(spec.shape)} (-1 = any size)",
        )


def _numpy() -> Any:
    if np is None:  # pragma: no cover
        raise ProtocolError(500, "tensors need numpy, which is not installed in this image")
    return np


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def to_array(data: Any, datatype: str, where: str) -> np.ndarray:
    """Convert JSON ``data`` to an array of ``datatype``; 422 when the values do not fit."""
    target = _numpy().dtype(V2_TO_NUMPY[datatype])
    try:
        array = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise ProtocolError(422, f"{where}: not a rectangular array ({exc})") from None
    if datatype == "BYTES":
        if array.dtype.kind not in "UO" and array.size:
            raise ProtocolError(422, f"{where}: datatype BYTES expects strings")
        return array.astype(object)
    kind = array.dtype.kind
    if kind == "O" and target.kind == "f":
        # null (our encoding of NaN) in a float tensor
        flat = array.ravel().tolist()
        if all(_is_number(v) for v in flat):
            return np.array([math.nan if v is None else v for v in flat], dtype=target).reshape(
                array.shape
            )
    if array.size and kind not in _ACCEPTED_KINDS.get(target.kind, ""):
        found = {"U": "strings", "b": "booleans", "f": "numbers with a fraction"}.get(
            kind, "mixed or null values"
        )
        raise ProtocolError(422, f"{where}: datatype {datatype} cannot hold {found}")
    if kind != target.kind or array.dtype != target:
        try:
            converted = array.astype(target)
        except (ValueError, OverflowError) as exc:
            raise ProtocolError(422, f"{where}: values do not fit {datatype} ({exc})") from None
        if kind in "iu" and target.kind in "iu" and not np.array_equal(converted, array):
            raise ProtocolError(422, f"{where}: values out of range for {datatype}")
        return converted
    return array


# ---------------------------------------------------------------------------- {"instances"}


def parse_instances(doc: Any, signature: Signature | None) -> Any:
    """The model input of a ``{"instances": [...]}`` request.

    With a single-input signature the instances become a numpy array of its datatype,
    checked against its shape (422 otherwise); without one they are passed on as
    decoded JSON.
    """
    if not isinstance(doc, dict):
        raise ProtocolError(400, 'expected a JSON object like {"instances": [...]}')
    if "instances" not in doc:
        raise ProtocolError(400, 'missing field "instances" (a list of inputs, one per row)')
    instances = doc["instances"]
    if not isinstance(instances, list):
        found = type(instances).__name__
        raise ProtocolError(400, f'"instances" must be a list, found {found}')
    if signature is None or len(signature.inputs) != 1:
        return instances
    spec = signature.inputs[0]
    array = to_array(instances, spec.datatype, '"instances"')
    check_spec(array, spec, '"instances"')
    return array


# ---------------------------------------------------------------------------- V2


@dataclasses.dataclass
class InferRequest:
    """A decoded ``/v2/models/{name}/infer`` request."""

    id: str | None
    inputs: dict[str, np.ndarray]
    #: requested output name -> send as binary; empty = every output
    outputs: dict[str, bool]
    binary_default: bool

    def model_input(self) -> Any:
        """One array for a single-input request, else ``{name: array}``."""
        if len(self.inputs) == 1:
            return next(iter(self.inputs.values()))
        return dict(self.inputs)


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        found = "missing" if value is None else f"found {type(value).__name__}"
        raise ProtocolError(400, f"{where}: field {key!r} is required ({found})")
    return value


def _parameters(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(400, f"{where}: 'parameters' must be an object")
    return params


def _from_binary(raw: memoryview, datatype: str, shape: list[int], where: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        items: list[bytes] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise ProtocolError(400, f"{where}: truncated BYTES element length")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            items.append(bytes(raw[offset : offset + length]))
            offset += length
        array = _numpy().empty(len(items), dtype=object)
        array[:] = items
    else:
        dtype = _numpy().dtype(V2_TO_NUMPY[datatype]).newbyteorder("<")
        if len(raw) != count * dtype.itemsize:
            raise ProtocolError(
                422,
                f"{where}: {len(raw)} bytes of binary data do not hold shape {shape} of "
                f"{datatype} ({count * dtype.itemsize} bytes)",
            )
        array = np.frombuffer(raw, dtype=dtype).astype(V2_TO_NUMPY[datatype], copy=False)
    if array.size != count:
        raise ProtocolError(
            422, f"{where}: {array.size} values do not fill shape {shape} ({count} values)"
        )
    return array.reshape(shape)


def parse_infer_request(
    body: bytes, header_length: int | None, signature: Signature | None
) -> InferRequest:
    """Decode an infer request (JSON, or JSON header + binary tensors) and check it."""
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise ProtocolError(
                400, f"Inference-Header-Content-Length {header_length} is outside the body"
            )
        doc, binary = decode_json(body[:header_length]), memoryview(body)[header_length:]
    else:
        doc, binary = decode_json(body), memoryview(b"")
    if not isinstance(doc, dict):
        raise ProtocolError(400, 'expected a JSON object like {"inputs": [...]}')
    raw_inputs = _field(doc, "inputs", list, "request")
    if not raw_inputs:
        raise ProtocolError(400, "request: 'inputs' is empty")
    specs = {s.name: s for s in signature.inputs} if signature else {}
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise ProtocolError(400, f"{where}: expected an object with name, shape, datatype")
        name = _field(item, "name", str, where)
        where = f"input {name!r}"
        shape = _field(item, "shape", list, where)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ProtocolError(400, f"{where}: shape must be a list of sizes, found {shape}")
        datatype = _field(item, "datatype", str, where)
        if datatype not in V2_TO_NUMPY:
            raise ProtocolError(
                400, f"{where}: unknown datatype {datatype!r}; one of {', '.join(V2_TO_NUMPY)}"
            )
        size = _parameters(item, where).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(400, f"{where}: binary_data_size {size!r} is out of the body")
            array = _from_binary(binary[offset : offset + size], datatype, shape, where)
            offset += size
        else:
            if "data" not in item:
                raise ProtocolError(400, f"{where}: field 'data' is required")
            array = to_array(item["data"], datatype, where)
            if array.size != math.prod(shape):
                raise ProtocolError(
                    422,
                    f"{where}: {array.size} values do not fill shape {shape} "
                    f"({math.prod(shape)} values)",
                )
            array = array.reshape(shape)
        if specs:
            spec = specs.get(name)
            if spec is None:
                raise ProtocolError(
                    422, f"{where}: the model has no such input; inputs: {', '.join(specs)}"
                )
            if datatype != spec.datatype:
                raise ProtocolError(
                    422, f"{where}: datatype {datatype}, the model expects {spec.datatype}"
                )
            check_spec(array, spec, where)
        inputs[name] = array
    missing = [n for n in specs if n not in inputs]
    if missing:
        raise ProtocolError(422, f"request: missing input(s) {', '.join(missing)}")
    binary_default = bool(_parameters(doc, "request").get("binary_data_output", False))
    outputs: dict[str, bool] = {}
    raw_outputs = doc.get("outputs") or []
    if not isinstance(raw_outputs, list):
        raise ProtocolError(400, "request: 'outputs' must be a list")
    for i, item in enumerate(raw_outputs):
        if not isinstance(item, dict):
            raise ProtocolError(400, f"outputs[{i}]: expected an object with a name")
        name = _field(item, "name", str, f"outputs[{i}]")
        outputs[name] = bool(_parameters(item, name).get("binary_data", binary_default))
    request_id = doc.get("id")
    return InferRequest(
        id=None if request_id is None else str(request_id),
        inputs=inputs,
        outputs=outputs,
        binary_default=binary_default,
    )


def split_outputs(result: Any, signature: Signature | None) -> list[tuple[str, np.ndarray]]:
    """Name a model's result: a mapping by its keys, a tuple by the signature, else one output."""
    names = [s.name for s in signature.outputs] if signature else []
    if isinstance(result, Mapping):
        pairs = [(str(k), v) for k, v in result.items()]
    elif isinstance(result, tuple) and len(names) == len(result) > 1:
        pairs = list(zip(names, result))
    else:
        pairs = [(names[0] if names else "output-0", result)]
    return [(name, _numpy().asarray(value)) for name, value in pairs]


def _to_bytes(array: np.ndarray) -> bytes:
    if v2_datatype(array) != "BYTES":
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    parts = []
    for item in array.ravel().tolist():
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: list[tuple[str, np.ndarray]],
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    if request.outputs:
        known = {name for name, _ in outputs}
        unknown = [n for n in request.outputs if n not in known]
        if unknown:
            raise ProtocolError(
                400, f"unknown output(s) {', '.join(unknown)}; outputs: {', '.join(known)}"
            )
        outputs = [(n, a) for n, a in outputs if n in request.outputs]
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in outputs:
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": v2_datatype(array),
            "shape": list(array.shape),
        }
        if request.outputs.get(name, request.binary_default):
            blob = _to_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.ravel()
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = tensors
    header = dumps(doc)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def model_metadata(
    name: str, version: str, platform: str, signature: Signature | None
) -> dict[str, Any]:
    """V2 model metadata: name, versions, platform, inputs and outputs from the signature."""
    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": [t.to_dict() for t in signature.inputs] if signature else [],
        "outputs": [t.to_dict() for t in signature.outputs] if signature else [],
    }
