"""V2 tensor parsing in process (``serving/protocol.py``): shapes, datatypes, element counts, overflow, requested
outputs and the binary-data wishes, each refusal naming the field that was wrong; and the response encoding."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from infra.errors import InvalidRequest
from infra.http import error_body
from serving.protocol import (
    MAX_ELEMENTS,
    binary_wish,
    check_signature,
    encode_response,
    json_tensor,
    output_datatype,
    output_tensor,
    parse_request,
    request_fields,
    tensor_head,
)


def body(*inputs, **top) -> bytes:  # type: ignore[no-untyped-def]
    return orjson.dumps({"inputs": list(inputs), **top})


def tensor(name="x", datatype="FP32", shape=(1, 2), data=(1, 2)):  # type: ignore[no-untyped-def]
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": list(data)}


def refused(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        parse_request(raw)


def test_a_request_is_parsed_into_arrays_of_the_declared_type_and_shape():
    got = parse_request(body(tensor(data=[[1, 2]]), tensor("n", "INT64", (3,), (1, 2, 3)), id="r1"))
    assert got.id == "r1" and got.outputs == () and got.parameters == {} and not got.wants_binary
    assert got.inputs["x"].dtype == np.float32 and got.inputs["x"].shape == (1, 2)
    assert got.inputs["n"].tolist() == [1, 2, 3] and got.datatypes == {"x": "FP32", "n": "INT64"}


@pytest.mark.parametrize(
    ("datatype", "value", "dtype"),
    [("BOOL", True, np.bool_), ("INT8", -128, np.int8), ("UINT8", 255, np.uint8), ("UINT64", 2**64 - 1, np.uint64),
     ("FP16", 0.5, np.float16), ("FP64", 0.1, np.float64), ("INT16", -3, np.int16), ("UINT32", 7, np.uint32)],
)  # fmt: skip
def test_each_datatype_gives_its_numpy_type(datatype, value, dtype):
    array = parse_request(body(tensor("v", datatype, (1,), (value,)))).inputs["v"]
    assert array.dtype == dtype and array.tolist() == [value]


def test_bytes_tensors_are_strings_flattened_from_any_depth():
    got = parse_request(body(tensor("s", "BYTES", (2, 2), [["a", ["b"]], [["c"], "d"]])))
    assert got.inputs["s"].tolist() == [["a", "b"], ["c", "d"]]
    assert parse_request(body({"name": "s", "datatype": "BYTES", "shape": [1], "data": "one"})).inputs[
        "s"
    ].tolist() == ["one"]
    refused(
        body(tensor("s", "BYTES", (2,), ["a", 1])), "input 's': data is not valid BYTES: BYTES data must be strings"
    )


def test_values_that_overflow_or_are_not_of_the_datatype_are_refused():
    refused(body(tensor("v", "INT8", (1,), (128,))), "input 'v': data is not valid INT8")
    refused(body(tensor("v", "UINT8", (1,), (-1,))), "input 'v': data is not valid UINT8")
    refused(body(tensor("v", "INT64", (1,), (2**63,))), "input 'v': data is not valid INT64")
    refused(body(tensor("v", "FP32", (1,), ("a",))), "input 'v': data is not valid FP32")
    refused(body(tensor("v", "FP32", (2,), ([1], 2))), "input 'v': data is not valid FP32")


def test_the_shape_must_match_the_data():
    refused(body(tensor(shape=(1, 3))), r"input 'x': shape \[1, 3\] needs 3 elements, data has 2")
    refused(body(tensor(shape=(1,))), r"input 'x': shape \[1\] needs 1 elements, data has 2")
    assert parse_request(body(tensor(shape=(0,), data=()))).inputs["x"].shape == (0,)


def test_a_tensor_head_names_what_is_missing_or_wrong():
    with pytest.raises(InvalidRequest, match=r"inputs\[0\] must be a JSON object, got list"):
        tensor_head([], "inputs[0]")
    for missing in ("name", "datatype", "shape"):
        raw = {k: v for k, v in tensor().items() if k != missing}
        with pytest.raises(InvalidRequest, match=rf"inputs\[2\] is missing field '{missing}'"):
            tensor_head(raw, "inputs[2]")
    with pytest.raises(InvalidRequest, match="input 'x' is missing field 'data'"):
        json_tensor({k: v for k, v in tensor().items() if k != "data"}, 0)
    for name in ("", 3, None):
        with pytest.raises(InvalidRequest, match=r"inputs\[0\]: 'name' must be a non-empty string, got"):
            tensor_head(tensor(name=name), "inputs[0]")
    for datatype in ("FP8", "fp32", 1):
        with pytest.raises(InvalidRequest, match=r"input 'x': unknown datatype .* \(one of BOOL, INT8, "):
            tensor_head(tensor(datatype=datatype), "inputs[0]")


@pytest.mark.parametrize("shape", [(1, -1), (1.0,), ("2",), (True,), "12", None])
def test_a_shape_is_a_list_of_non_negative_integers(shape):
    raw = {**tensor(), "shape": list(shape) if isinstance(shape, tuple) else shape}
    with pytest.raises(InvalidRequest, match=r"input 'x': 'shape' must be a list of non-negative integers"):
        tensor_head(raw, "inputs[0]")


def test_a_shape_larger_than_a_tensor_may_be_is_refused_before_reading_data():
    assert tensor_head(tensor(shape=[1] * 32), "i")[2] == [1] * 32
    assert tensor_head(tensor(shape=[MAX_ELEMENTS]), "i")[2] == [MAX_ELEMENTS]
    assert tensor_head(tensor(shape=[2**20, 2**20]), "i")[2] == [2**20, 2**20]
    for shape in ([1] * 33, [MAX_ELEMENTS + 1], [2**20, 2**20 + 1], [0, MAX_ELEMENTS + 1]):
        with pytest.raises(InvalidRequest, match=r"input 'x': shape .* is larger than a tensor may be"):
            tensor_head(tensor(shape=shape), "i")


def test_the_request_object_needs_inputs_and_well_typed_fields():
    for raw in (b"[]", b"{}", body(), orjson.dumps({"inputs": {}})):
        refused(raw, "request must be a JSON object with a non-empty 'inputs' list")
    refused(b"{", "request body is not valid JSON")
    refused(body(tensor(), id=3), "'id' must be a string, got int")
    refused(body(tensor(), outputs={"name": "y"}), r"'outputs' must be a list of \{\"name\": ...\} objects, got dict")
    refused(body(tensor(), outputs=[{"name": 1}]), r"outputs\[0\] must be an object with a string 'name'")
    refused(body(tensor(), outputs=[{"name": "a"}, "b"]), r"outputs\[1\] must be an object with a string 'name'")
    refused(body(tensor(), parameters=[1]), "'parameters' must be an object, got list")
    refused(body(tensor(), tensor()), "input 'x' is given twice")


def test_requested_outputs_and_their_binary_wishes_are_kept():
    outputs = [
        {"name": "a"},
        {"name": "b", "parameters": {"binary_data": True}},
        {"name": "c", "parameters": {"binary_data_output": False}},
        {"name": "d", "parameters": {}},
    ]
    got = parse_request(body(tensor(), outputs=outputs, id=None, parameters=None))
    assert got.id is None and got.outputs == ("a", "b", "c", "d") and got.parameters == {}
    assert got.wants_binary and got.binary("b") and not got.binary("c") and not got.binary("a")
    assert not got.binary("d")
    refused(
        body(tensor(), outputs=[{"name": "b", "parameters": {"binary_data": 1}}]),
        r"outputs\[0\]: parameter 'binary_data' must be true or false, got 1",
    )
    refused(body(tensor(), outputs=[{"name": "b", "parameters": 1}]), r"outputs\[0\]: 'parameters' must be an object")


def test_binary_data_output_is_every_outputs_default_unless_one_says_not():
    got = parse_request(
        body(
            tensor(),
            parameters={"binary_data_output": True},
            outputs=[{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
        )
    )
    assert got.binary_default and got.binary("a") and not got.binary("b") and got.binary("other")
    plain = parse_request(body(tensor(), parameters={"binary_data_output": False, "k": 1}))
    assert (
        not plain.binary_default
        and not plain.wants_binary
        and plain.parameters == {"binary_data_output": False, "k": 1}
    )
    refused(body(tensor(), parameters={"binary_data_output": "yes"}), "request: parameter 'binary_data_output' must be")


def test_a_binary_wish_reads_the_first_name_given():
    assert binary_wish(None, "w", "a") is None
    assert binary_wish({}, "w", "a") is None
    assert binary_wish({"a": None, "b": True}, "w", "a", "b") is True
    assert binary_wish({"a": False, "b": True}, "w", "a", "b") is False


def test_request_fields_keep_the_inputs_unread():
    fields = request_fields({"inputs": [{"anything": 1}], "id": "i"})
    assert fields.inputs == [{"anything": 1}] and fields.id == "i" and fields.binary_outputs == {}


def spec(name, datatype, shape):  # type: ignore[no-untyped-def]
    return SimpleNamespace(name=name, datatype=datatype, shape=shape)


def test_inputs_must_match_the_models_signature_where_minus_one_is_any_size():
    request = parse_request(body(tensor("x", "FP32", (2, 3), range(6))))
    check_signature(request, [spec("x", "FP32", [-1, 3])])
    check_signature(request, [spec("x", "FP32", [2, 3])])
    with pytest.raises(InvalidRequest, match=r"missing \['y'\], unexpected \[\]"):
        check_signature(request, [spec("x", "FP32", [-1, 3]), spec("y", "FP32", [1])])
    with pytest.raises(InvalidRequest, match=r"missing \['y'\], unexpected \['x'\]"):
        check_signature(request, [spec("y", "FP32", [-1, 3])])
    with pytest.raises(InvalidRequest, match="input 'x': datatype FP32 but the model takes FP64"):
        check_signature(request, [spec("x", "FP64", [-1, 3])])
    with pytest.raises(InvalidRequest, match=r"input 'x': shape \[2, 3\] but the model takes \[-1, 4\]"):
        check_signature(request, [spec("x", "FP32", [-1, 4])])
    with pytest.raises(InvalidRequest, match=r"input 'x': shape \[2, 3\] but the model takes \[-1\]"):
        check_signature(request, [spec("x", "FP32", [-1])])
    with pytest.raises(InvalidRequest, match=r"shape \[2, 3\] but the model takes \[3, -1\]"):
        check_signature(request, [spec("x", "FP32", [3, -1])])


def test_outputs_carry_their_v2_datatype_shape_and_flat_data():
    assert output_tensor("p", np.array([[0.5, 1.5]], np.float32)) == {
        "name": "p",
        "datatype": "FP32",
        "shape": [1, 2],
        "data": pytest.approx([0.5, 1.5]),
    }
    assert output_datatype("b", np.array([True])) == "BOOL"
    assert output_datatype("h", np.array([1], np.float16)) == "FP16"
    assert output_tensor("h", np.array([1.5], np.float16))["data"] == [1.5]  # not numpy-safe: a list
    assert output_tensor("s", np.array([b"a", b"b"], dtype=object))["data"] == ["a", "b"]
    assert output_tensor("s", np.array(["x", 1], dtype=object))["data"] == ["x", "1"]
    assert output_tensor("u", np.array(["x", "y"]))["datatype"] == "BYTES"
    with pytest.raises(InvalidRequest, match="output 'c' has dtype complex64 that V2 cannot carry"):
        output_datatype("c", np.array([1j], np.complex64))


def test_the_response_body_names_the_model_its_version_the_id_and_the_outputs():
    answer = orjson.loads(encode_response("m", "2", "r1", {"y": np.array([1, 2], np.int64)}, {"k": "v"}))
    assert answer == {
        "model_name": "m",
        "model_version": "2",
        "id": "r1",
        "parameters": {"k": "v"},
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [2], "data": [1, 2]}],
    }
    bare = orjson.loads(encode_response("m", "1", None, {}))
    assert bare == {"model_name": "m", "model_version": "1", "outputs": []}
    assert orjson.loads(error_body("bad")) == {"error": "bad"}


def test_refusals_name_the_input_by_its_place_in_the_request():
    refused(body(tensor(), 5), r"^inputs\[1\] must be a JSON object, got int$")
    refused(body({"name": "x"}), r"^inputs\[0\] is missing field 'datatype'$")
    refused(b"{}", r"^request must be a JSON object with a non-empty 'inputs' list$")
    refused(
        body(tensor(), outputs=[{"name": "b", "parameters": 1}]),
        r"^outputs\[0\]: 'parameters' must be an object, got int$",
    )


def test_long_values_are_cut_so_a_refusal_stays_at_most_300_characters():
    long = "x" * 400
    for raw in (
        tensor(name=[long]),
        tensor(datatype=long),
        tensor(shape=[long]),
        tensor(shape=[1] * 400),
        tensor("v", "FP32", (1,), (long,)),
    ):
        with pytest.raises(InvalidRequest) as caught:
            parse_request(body(raw))
        assert len(str(caught.value)) == 300, str(caught.value)[:80]
    with pytest.raises(InvalidRequest) as caught:
        parse_request(body(tensor(), outputs=[{"name": "b", "parameters": {"binary_data": long}}]))
    assert len(str(caught.value)) == 300


def test_an_output_may_ask_for_binary_data_by_either_name():
    outputs = [{"name": "a", "parameters": {"binary_data_output": True}}, {"name": "b"}]
    got = parse_request(body(tensor(), outputs=outputs))
    assert got.binary("a") and not got.binary("b") and got.binary_outputs == {"a": True}


def test_numpy_safe_outputs_go_to_orjson_as_arrays_and_others_as_lists():
    assert isinstance(output_tensor("p", np.array([0.5], np.float32))["data"], np.ndarray)
    assert isinstance(output_tensor("h", np.array([1.5], np.float16))["data"], list)
    with pytest.raises(InvalidRequest, match=r"^output 'c' has dtype complex64 that V2 cannot carry$"):
        output_tensor("c", np.array([1j], np.complex64))
