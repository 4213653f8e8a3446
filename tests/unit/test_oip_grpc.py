"""The gRPC form of the protocol's tensors (bentos/oip_grpc.py): raw and typed contents read into the
REST form that bentos/oip.py checks, outputs written as raw contents, and what is malformed named.
The service answering over gRPC through Triton's client: tests/integration/test_oip_grpc.py."""

import math
import struct

import pytest
from tritonclient.grpc import service_pb2 as pb

from bentos.oip import ProtocolError, raw_contents, text_elements
from bentos.oip_grpc import response_of, tensors_of


def test_raw_and_typed_contents_read_as_the_rest_form():
    request = pb.ModelInferRequest(model_name="churn")
    request.inputs.add(name="customer_id", datatype="BYTES", shape=[2])
    request.inputs.add(name="amount", datatype="FP32", shape=[2])
    request.raw_input_contents.extend([raw_contents("BYTES", ["C1", "Zoë"]), raw_contents("FP32", [1.5, 2.25])])
    assert tensors_of(request) == [{"name": "customer_id", "datatype": "BYTES", "shape": [2], "data": ["C1", "Zoë"]},
                                   {"name": "amount", "datatype": "FP32", "shape": [2], "data": [1.5, 2.25]}]
    typed = pb.ModelInferRequest(model_name="churn")
    typed.inputs.add(name="customer_id", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"C1")
    typed.inputs.add(name="amount", datatype="FP64", shape=[1]).contents.fp64_contents.append(3.0)
    assert [t["data"] for t in tensors_of(typed)] == [["C1"], [3.0]]


@pytest.mark.parametrize(("raw", "says"), [
    (b"\x05\x00\x00\x00C1", "inside an element"),
    (b"\x02\x00", "inside an element's length"),
    (b"\x02\x00\x00\x00\xff\xfe", "UTF-8"),
])
def test_malformed_raw_bytes_name_the_input(raw, says):
    with pytest.raises(ProtocolError, match=says) as refused:
        text_elements(raw, "customer_id")
    assert refused.value.status == 400 and "'customer_id'" in refused.value.detail


def test_raw_contents_that_do_not_pair_with_the_inputs_or_an_unknown_datatype_are_refused():
    request = pb.ModelInferRequest(model_name="churn")
    request.inputs.add(name="customer_id", datatype="BYTES", shape=[1])
    request.inputs.add(name="amount", datatype="FP64", shape=[1])
    request.raw_input_contents.append(raw_contents("BYTES", ["C1"]))
    with pytest.raises(ProtocolError, match="1 tensors for 2 inputs"):
        tensors_of(request)
    odd = pb.ModelInferRequest(model_name="churn")
    odd.inputs.add(name="amount", datatype="COMPLEX", shape=[1])
    with pytest.raises(ProtocolError, match="unknown datatype 'COMPLEX'"):
        tensors_of(odd)


def test_outputs_go_as_raw_contents_one_per_output_in_order():
    answer = {"model_name": "fraud", "model_version": "3", "id": "r1", "outputs": [
        {"name": name, "datatype": kind, "shape": [2], "data": data} for name, kind, data in (
            ("fraud_probability", "FP64", [0.25, None]), ("is_fraud", "BOOL", [True, False]), ("error", "BYTES", ["", "unknown_customer"]))]}
    response = response_of(answer)
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("fraud_probability", "FP64", [2]), ("is_fraud", "BOOL", [2]), ("error", "BYTES", [2])]
    assert response.raw_output_contents[1] == b"\x01\x00"
    assert math.isnan(struct.unpack("<2d", response.raw_output_contents[0])[1])  # a row not scored: null in JSON, NaN raw
    assert text_elements(response.raw_output_contents[2], "error") == ["", "unknown_customer"]
