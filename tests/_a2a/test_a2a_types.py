"""A2A 1.0 wire types: ProtoJSON names checked against the official SDK's proto, round trips."""

from __future__ import annotations

import inspect
from datetime import datetime, timezone
from typing import Any

import pytest
from a2a.types import a2a_pb2
from google.protobuf import json_format
from pydantic import BaseModel, ValidationError

from keycard_agents import KeycardError
from keycard_agents._a2a import errors, types
from keycard_agents.a2a import (
    Artifact,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    Task,
    TaskState,
    TaskStatus,
    dump,
)

WIRE_MODELS = [
    obj
    for name, obj in vars(types).items()
    if inspect.isclass(obj)
    and issubclass(obj, BaseModel)
    and obj.__module__ == types.__name__
    and not name.startswith(("_", "JSONRPC"))
]


def test_every_wire_model_has_a_proto_counterpart() -> None:
    missing = [m.__name__ for m in WIRE_MODELS if not hasattr(a2a_pb2, m.__name__)]
    assert missing == []
    assert len(WIRE_MODELS) >= 30


@pytest.mark.parametrize("model", WIRE_MODELS, ids=lambda m: m.__name__)
def test_field_names_are_the_proto_json_names(model: type[BaseModel]) -> None:
    descriptor = getattr(a2a_pb2, model.__name__).DESCRIPTOR
    proto_names = {f.json_name for f in descriptor.fields}
    ours = {info.alias or name for name, info in model.model_fields.items()}
    assert ours - proto_names == set()


def test_enum_values_are_the_proto_names() -> None:
    assert {s.value for s in TaskState} == set(a2a_pb2.TaskState.keys())
    assert {r.value for r in Role} == set(a2a_pb2.Role.keys())


def _task() -> Task:
    message = Message(
        message_id="m1",
        role=Role.USER,
        parts=[
            Part(text="hello"),
            Part(raw=b"\x00\xffbin", media_type="application/octet-stream", filename="a.bin"),
            Part(url="https://example.test/file.pdf"),
            Part(data={"skill": "plan", "arguments": {"city": "Paris"}}),
        ],
        context_id="c1",
        task_id="t1",
        reference_task_ids=["t0"],
    )
    return Task(
        id="t1",
        context_id="c1",
        status=TaskStatus(
            state=TaskState.INPUT_REQUIRED,
            timestamp=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        ),
        artifacts=[Artifact(artifact_id="a1", parts=[Part(data=[1, 2])], name="result")],
        history=[message],
        metadata={"k": "v"},
    )


def test_task_round_trips_with_camel_case_and_enum_strings() -> None:
    data = dump(_task())
    assert data["contextId"] == "c1"
    assert data["status"] == {
        "state": "TASK_STATE_INPUT_REQUIRED",
        "timestamp": "2025-01-02T03:04:05Z",
    }
    message = data["history"][0]
    assert message["role"] == "ROLE_USER"
    assert message["messageId"] == "m1"
    assert message["referenceTaskIds"] == ["t0"]
    assert message["parts"][1] == {
        "raw": "AP9iaW4=",
        "filename": "a.bin",
        "mediaType": "application/octet-stream",
    }
    assert "kind" not in str(data)
    assert "extensions" not in message  # None fields are left out
    assert Task.model_validate(data) == _task()


def test_our_json_parses_strictly_as_the_official_proto() -> None:
    # No ignore_unknown_fields: every field we emit exists in a2a.proto.
    proto = json_format.ParseDict(dump(_task()), a2a_pb2.Task())
    assert proto.status.state == a2a_pb2.TASK_STATE_INPUT_REQUIRED
    assert proto.history[0].parts[1].raw == b"\x00\xffbin"
    assert proto.history[0].parts[3].data.struct_value["skill"] == "plan"


def test_parses_a_message_serialized_by_the_official_sdk() -> None:
    proto = a2a_pb2.Message(
        message_id="m9",
        context_id="c9",
        role=a2a_pb2.ROLE_AGENT,
        parts=[a2a_pb2.Part(text="hi"), a2a_pb2.Part(raw=b"\x01\x02", media_type="x/y")],
    )
    proto.parts.add().data.struct_value.update({"a": 1})
    message = Message.model_validate(json_format.MessageToDict(proto))
    assert message.role is Role.AGENT
    assert message.parts[0].text == "hi"
    assert message.parts[1].raw == b"\x01\x02"
    assert message.parts[2].data == {"a": 1.0}


def test_raw_accepts_url_safe_and_unpadded_base64() -> None:
    assert Part.model_validate({"raw": "AP9iaW4"}).raw == b"\x00\xffbin"
    assert Part.model_validate({"raw": "_-8"}).raw == b"\xff\xef"
    with pytest.raises(ValidationError, match="base64"):
        Part.model_validate({"raw": "not base64!"})


@pytest.mark.parametrize(
    "part",
    [{}, {"text": "a", "url": "https://x.test"}, {"metadata": {"a": 1}}],
)
def test_part_holds_exactly_one_kind_of_content(part: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of text, raw, url, data"):
        Part.model_validate(part)


def test_stream_response_and_send_response_are_one_ofs() -> None:
    task = _task()
    assert dump(StreamResponse(task=task)).keys() == {"task"}
    with pytest.raises(ValidationError):
        StreamResponse()
    with pytest.raises(ValidationError):
        StreamResponse(task=task, message=task.history[0])
    with pytest.raises(ValidationError):
        SendMessageResponse(task=task, message=task.history[0])
    assert dump(SendMessageResponse(message=task.history[0])).keys() == {"message"}


def test_unknown_enum_and_wrong_types_are_rejected_with_a_list_of_problems() -> None:
    with pytest.raises(ValidationError) as caught:
        SendMessageRequest.model_validate(
            {
                "message": {"messageId": 5, "role": "ROLE_BOSS", "parts": []},
                "configuration": {"historyLength": "many"},
            }
        )
    problem = errors.invalid_params(caught.value)
    assert problem.code == -32602
    fields = {p["field"] for p in problem.data["errors"]}
    assert fields == {
        "message.messageId",
        "message.role",
        "message.parts",
        "configuration.historyLength",
    }
    assert "message.role" in problem.message
    assert "ROLE_BOSS" not in problem.message  # inputs are never echoed


def test_list_tasks_request_parses_status_and_timestamp() -> None:
    request = ListTasksRequest.model_validate(
        {"status": "TASK_STATE_WORKING", "statusTimestampAfter": "2025-01-01T00:00:00Z"}
    )
    assert request.status is TaskState.WORKING
    assert request.status_timestamp_after == datetime(2025, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ValidationError):
        ListTasksRequest.model_validate({"status": "WORKING"})


def test_task_state_classification() -> None:
    assert {s for s in TaskState if s.is_terminal} == {
        TaskState.COMPLETED,
        TaskState.FAILED,
        TaskState.CANCELED,
        TaskState.REJECTED,
    }
    assert {s for s in TaskState if s.is_interrupted} == {
        TaskState.INPUT_REQUIRED,
        TaskState.AUTH_REQUIRED,
    }


def test_jsonrpc_envelopes() -> None:
    request = JSONRPCRequest.model_validate(
        {"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": {"id": "t"}}
    )
    assert request.id == 7
    for bad in (
        {"jsonrpc": "1.0", "method": "x"},
        {"jsonrpc": "2.0", "id": True, "method": "x"},
        {"jsonrpc": "2.0", "id": 1.5, "method": "x"},
        {"jsonrpc": "2.0", "id": 1, "method": "x", "params": [1]},
    ):
        with pytest.raises(ValidationError):
            JSONRPCRequest.model_validate(bad)
    assert JSONRPCResponse(id="a", result=None).to_json_data() == {
        "jsonrpc": "2.0",
        "id": "a",
        "result": None,
    }
    failure = JSONRPCResponse(
        id=None, error=JSONRPCError.model_validate(errors.TaskNotFoundError().to_jsonrpc())
    )
    assert failure.to_json_data() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32001, "message": "Task not found"},
    }


ERROR_TABLE = [
    (errors.TaskNotFoundError, -32001, 404),
    (errors.TaskNotCancelableError, -32002, 409),
    (errors.PushNotificationNotSupportedError, -32003, 400),
    (errors.UnsupportedOperationError, -32004, 501),
    (errors.ContentTypeNotSupportedError, -32005, 415),
    (errors.InvalidAgentResponseError, -32006, 500),
    (errors.ExtendedAgentCardNotConfiguredError, -32007, 400),
    (errors.ExtensionSupportRequiredError, -32008, 400),
    (errors.VersionNotSupportedError, -32009, 400),
    (errors.ParseError, -32700, 400),
    (errors.InvalidRequestError, -32600, 400),
    (errors.MethodNotFoundError, -32601, 404),
    (errors.InvalidParamsError, -32602, 400),
    (errors.InternalError, -32603, 500),
]


@pytest.mark.parametrize(("cls", "code", "status"), ERROR_TABLE, ids=lambda v: str(v))
def test_error_codes_and_http_statuses(cls: type[errors.A2AError], code: int, status: int) -> None:
    error = cls("what happened", data={"x": 1})
    assert isinstance(error, KeycardError)
    assert (error.code, error.http_status) == (code, status)
    assert error.to_jsonrpc() == {"code": code, "message": "what happened", "data": {"x": 1}}
    assert str(cls()) == cls.default_message


def test_error_codes_match_the_official_sdk() -> None:
    from a2a.utils import errors as sdk

    ours = {
        cls.__name__.replace("ParseError", "JSONParseError"): code for cls, code, _ in ERROR_TABLE
    }
    theirs = {cls.__name__: code for cls, code in sdk.JSON_RPC_ERROR_CODE_MAP.items()}
    assert ours == theirs


def test_new_ids_are_random_uuids_in_their_text_form() -> None:
    import uuid

    from keycard_agents._a2a.types import new_id

    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower-case hex, 8-4-4-4-12
    # Every variant digit occurs: the two random bits below the variant are kept.
    assert {text[19] for text in ids} == set("89ab")
