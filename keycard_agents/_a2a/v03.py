"""A2A 0.3 wire shapes, translated to and from A2A 1.0 ProtoJSON.

Implements the 0.3 JSON-RPC binding's data model as far as it differs from 1.0 (A2A 0.3
§6 data objects and §7 methods; A2A 1.0 §3.2.6 on serving older clients): slash-style
method names (``message/send``), objects and parts discriminated by ``kind``, lower-case
task states (``input-required``), roles ``user``/``agent``, file parts nested under
``file``, push notification configs wrapped in ``pushNotificationConfig``, and a card
with a top-level ``url`` and ``protocolVersion``.

Everything here works on plain JSON data (what the bindings read and write): the server
translates a 0.3 request to 1.0, runs it through the 1.0 code path, and translates the
answer back; our client does the reverse for a 0.3 agent. Nothing is decided here, only
reshaped, and anything that is not a JSON object where one is expected is passed through
for the 1.0 validation to refuse with its precise error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "METHODS_FROM_V03",
    "METHODS_TO_V03",
    "STREAMING_METHODS_V03",
    "V03_ERROR_CODES",
    "card_endpoint_v03",
    "error_to_v03",
    "event_from_v03",
    "event_to_v03",
    "message_from_v03",
    "message_to_v03",
    "params_from_v03",
    "params_to_v03",
    "result_from_v03",
    "result_to_v03",
    "task_from_v03",
    "task_to_v03",
]

METHODS_FROM_V03: dict[str, str] = {
    "message/send": "SendMessage",
    "message/stream": "SendStreamingMessage",
    "tasks/get": "GetTask",
    "tasks/cancel": "CancelTask",
    "tasks/resubscribe": "SubscribeToTask",
    "tasks/pushNotificationConfig/set": "CreateTaskPushNotificationConfig",
    "tasks/pushNotificationConfig/get": "GetTaskPushNotificationConfig",
    "tasks/pushNotificationConfig/list": "ListTaskPushNotificationConfigs",
    "tasks/pushNotificationConfig/delete": "DeleteTaskPushNotificationConfig",
    "agent/getAuthenticatedExtendedCard": "GetExtendedAgentCard",
}
METHODS_TO_V03 = {v1: v03 for v03, v1 in METHODS_FROM_V03.items()}
STREAMING_METHODS_V03 = frozenset({"message/stream", "tasks/resubscribe"})

# 0.3 defines -32001..-32007 with the same meaning as 1.0; 1.0's later codes
# (-32008 extension support required, -32009 version not supported) have no 0.3 code.
V03_ERROR_CODES = frozenset({-32700, -32600, -32601, -32602, -32603, *range(-32007, -32000)})

_STATES_TO_V03 = {
    "TASK_STATE_SUBMITTED": "submitted",
    "TASK_STATE_WORKING": "working",
    "TASK_STATE_INPUT_REQUIRED": "input-required",
    "TASK_STATE_COMPLETED": "completed",
    "TASK_STATE_CANCELED": "canceled",
    "TASK_STATE_FAILED": "failed",
    "TASK_STATE_REJECTED": "rejected",
    "TASK_STATE_AUTH_REQUIRED": "auth-required",
    "TASK_STATE_UNSPECIFIED": "unknown",
}
_STATES_FROM_V03 = {v03: v1 for v1, v03 in _STATES_TO_V03.items()}
# A 0.3 status update says whether it ends the stream; in 1.0 the state says it.
_FINAL_V03_STATES = frozenset(
    {"input-required", "completed", "canceled", "failed", "rejected", "auth-required"}
)
_ROLES_TO_V03 = {"ROLE_USER": "user", "ROLE_AGENT": "agent"}
_ROLES_FROM_V03 = {v03: v1 for v1, v03 in _ROLES_TO_V03.items()}


def _obj(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _copy(source: Mapping[str, Any], target: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key in source and source[key] is not None:
            target[key] = source[key]


# ------------------------------------------------------------------------------ parts


def _part_from_v03(part: Any) -> Any:
    data = _obj(part)
    if data is None:
        return part
    out: dict[str, Any] = {}
    _copy(data, out, "metadata")
    kind = data.get("kind")
    if kind == "text":
        _copy(data, out, "text")
    elif kind == "data":
        _copy(data, out, "data")
    elif kind == "file":
        file = _obj(data.get("file")) or {}
        if "bytes" in file:
            out["raw"] = file["bytes"]
        if "uri" in file:
            out["url"] = file["uri"]
        _copy(file, out, "name")
        if "name" in out:
            out["filename"] = out.pop("name")
        if file.get("mimeType") is not None:
            out["mediaType"] = file["mimeType"]
    # An unknown kind becomes a part with no content, which 1.0 validation refuses.
    return out


def _part_to_v03(part: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "text" in part:
        out = {"kind": "text", "text": part["text"]}
    elif "raw" in part or "url" in part:
        file: dict[str, Any] = {}
        if "raw" in part:
            file["bytes"] = part["raw"]
        else:
            file["uri"] = part["url"]
        _copy(part, file, "mediaType", "filename")
        if "mediaType" in file:
            file["mimeType"] = file.pop("mediaType")
        if "filename" in file:
            file["name"] = file.pop("filename")
        out = {"kind": "file", "file": file}
    else:
        data = part.get("data")
        # 0.3 data parts hold an object; 1.0 allows any JSON value.
        out = {"kind": "data", "data": data if isinstance(data, dict) else {"value": data}}
    _copy(part, out, "metadata")
    return out


def _parts_from_v03(parts: Any) -> Any:
    return [_part_from_v03(p) for p in parts] if isinstance(parts, list) else parts


# --------------------------------------------------------------------------- messages


def message_from_v03(message: Any) -> Any:
    data = _obj(message)
    if data is None:
        return message
    out = {k: v for k, v in data.items() if k != "kind"}
    role = data.get("role")
    if isinstance(role, str):
        out["role"] = _ROLES_FROM_V03.get(role, role)
    if "parts" in data:
        out["parts"] = _parts_from_v03(data["parts"])
    return out


def message_to_v03(message: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(message)
    out["kind"] = "message"
    out["role"] = _ROLES_TO_V03.get(str(message.get("role")), "agent")
    out["parts"] = [_part_to_v03(p) for p in message.get("parts", [])]
    return out


def _status_to_v03(status: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(status)
    out["state"] = _STATES_TO_V03.get(str(status.get("state")), "unknown")
    if isinstance(status.get("message"), dict):
        out["message"] = message_to_v03(status["message"])
    return out


def _status_from_v03(status: Any) -> Any:
    data = _obj(status)
    if data is None:
        return status
    out = dict(data)
    state = data.get("state")
    if isinstance(state, str):
        out["state"] = _STATES_FROM_V03.get(state, state)
    if "message" in data:
        out["message"] = message_from_v03(data["message"])
    return out


def _artifact_to_v03(artifact: Mapping[str, Any]) -> dict[str, Any]:
    return {**artifact, "parts": [_part_to_v03(p) for p in artifact.get("parts", [])]}


def _artifact_from_v03(artifact: Any) -> Any:
    data = _obj(artifact)
    if data is None:
        return artifact
    return {**data, "parts": _parts_from_v03(data.get("parts"))}


# ------------------------------------------------------------------------------ tasks


def task_to_v03(task: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(task)
    out["kind"] = "task"
    out["status"] = _status_to_v03(task.get("status", {}))
    out["artifacts"] = [_artifact_to_v03(a) for a in task.get("artifacts", [])]
    out["history"] = [message_to_v03(m) for m in task.get("history", [])]
    return out


def task_from_v03(task: Any) -> Any:
    data = _obj(task)
    if data is None:
        return task
    out = {k: v for k, v in data.items() if k != "kind"}
    out["status"] = _status_from_v03(data.get("status"))
    if isinstance(data.get("artifacts"), list):
        out["artifacts"] = [_artifact_from_v03(a) for a in data["artifacts"]]
    if isinstance(data.get("history"), list):
        out["history"] = [message_from_v03(m) for m in data["history"]]
    return out


def event_to_v03(event: Mapping[str, Any]) -> dict[str, Any]:
    """A 1.0 StreamResponse as the 0.3 ``kind``-discriminated stream event."""
    if "task" in event:
        return task_to_v03(event["task"])
    if "message" in event:
        return message_to_v03(event["message"])
    if "statusUpdate" in event:
        update = event["statusUpdate"]
        status = _status_to_v03(update.get("status", {}))
        return {
            **update,
            "kind": "status-update",
            "status": status,
            "final": status["state"] in _FINAL_V03_STATES,
        }
    update = event.get("artifactUpdate", {})
    return {**update, "kind": "artifact-update", "artifact": _artifact_to_v03(update["artifact"])}


def event_from_v03(event: Any) -> Any:
    """A 0.3 stream event (or ``message/send`` result) as a 1.0 StreamResponse."""
    data = _obj(event)
    if data is None:
        return event
    kind = data.get("kind")
    if kind == "task":
        return {"task": task_from_v03(data)}
    if kind == "message":
        return {"message": message_from_v03(data)}
    if kind == "status-update":
        update = {k: v for k, v in data.items() if k not in ("kind", "final")}
        update["status"] = _status_from_v03(data.get("status"))
        return {"statusUpdate": update}
    if kind == "artifact-update":
        update = {k: v for k, v in data.items() if k != "kind"}
        update["artifact"] = _artifact_from_v03(data.get("artifact"))
        return {"artifactUpdate": update}
    return {}


# --------------------------------------------------------------------- push configs


def _push_config_from_v03(task_id: Any, config: Any) -> dict[str, Any]:
    data = _obj(config) or {}
    out: dict[str, Any] = {"taskId": task_id}
    _copy(data, out, "id", "url", "token")
    auth = _obj(data.get("authentication"))
    if auth is not None:
        schemes = auth.get("schemes")
        scheme = schemes[0] if isinstance(schemes, list) and schemes else None
        out["authentication"] = {"scheme": scheme}
        _copy(auth, out["authentication"], "credentials")
    return out


def _push_config_to_v03(config: Mapping[str, Any]) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    _copy(config, inner, "id", "url", "token")
    auth = config.get("authentication")
    if isinstance(auth, dict):
        inner["authentication"] = {"schemes": [auth.get("scheme")]}
        _copy(auth, inner["authentication"], "credentials")
    return {"taskId": config.get("taskId"), "pushNotificationConfig": inner}


# ------------------------------------------------------------------- params, results


def params_from_v03(method_v03: str, params: Any) -> Any:
    """The 1.0 params for a 0.3 request's params (``method_v03`` is a 0.3 name)."""
    data = _obj(params)
    if data is None:
        return params
    if method_v03 in ("message/send", "message/stream"):
        out: dict[str, Any] = {"message": message_from_v03(data.get("message"))}
        _copy(data, out, "metadata")
        config = _obj(data.get("configuration"))
        if config is not None:
            v1: dict[str, Any] = {}
            _copy(config, v1, "acceptedOutputModes", "historyLength")
            if config.get("blocking") is False:
                v1["returnImmediately"] = True
            if config.get("pushNotificationConfig") is not None:
                v1["taskPushNotificationConfig"] = _push_config_from_v03(
                    None, config["pushNotificationConfig"]
                )
                del v1["taskPushNotificationConfig"]["taskId"]
            out["configuration"] = v1
        elif data.get("configuration") is not None:
            out["configuration"] = data["configuration"]  # for 1.0 validation to refuse
        return out
    if method_v03 == "tasks/get":
        out = {"id": data.get("id")}
        _copy(data, out, "historyLength")
        return out
    if method_v03 == "tasks/cancel":
        out = {"id": data.get("id")}
        _copy(data, out, "metadata")
        return out
    if method_v03 == "tasks/resubscribe":
        return {"id": data.get("id")}
    # A 0.3 config set without an id is known by its task's id, and a get or delete
    # without a config id means that one (as the 0.3 reference SDK does).
    if method_v03 == "tasks/pushNotificationConfig/set":
        config = _push_config_from_v03(data.get("taskId"), data.get("pushNotificationConfig"))
        config.setdefault("id", data.get("taskId"))
        return config
    if method_v03 in ("tasks/pushNotificationConfig/get", "tasks/pushNotificationConfig/delete"):
        config_id = data.get("pushNotificationConfigId")
        return {"taskId": data.get("id"), "id": data.get("id") if config_id is None else config_id}
    if method_v03 == "tasks/pushNotificationConfig/list":
        return {"taskId": data.get("id")}
    return {}


def params_to_v03(method_v1: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The 0.3 params for the 1.0 params our client builds (send, get, cancel, stream)."""
    if method_v1 in ("SendMessage", "SendStreamingMessage"):
        out: dict[str, Any] = {"message": message_to_v03(params["message"])}
        out["message"]["role"] = "user"
        _copy(params, out, "metadata")
        config = params.get("configuration") or {}
        v03: dict[str, Any] = {}
        _copy(config, v03, "acceptedOutputModes", "historyLength")
        if method_v1 == "SendMessage":
            v03["blocking"] = not config.get("returnImmediately", False)
        if v03:
            out["configuration"] = v03
        return out
    return {k: v for k, v in params.items() if k in ("id", "historyLength", "metadata")}


def result_to_v03(method_v03: str, result: Any) -> Any:
    """The 0.3 result for the 1.0 result of the translated request."""
    if method_v03 == "message/send":
        return event_to_v03(result)
    if method_v03 in ("tasks/get", "tasks/cancel"):
        return task_to_v03(result)
    if method_v03 in ("tasks/pushNotificationConfig/set", "tasks/pushNotificationConfig/get"):
        return _push_config_to_v03(result)
    if method_v03 == "tasks/pushNotificationConfig/list":
        return [_push_config_to_v03(c) for c in result.get("configs", [])]
    if method_v03 == "tasks/pushNotificationConfig/delete":
        return None
    if method_v03 == "agent/getAuthenticatedExtendedCard":
        return card_to_v03(result)
    return result  # pragma: no cover - every 0.3 method is listed above


def result_from_v03(method_v1: str, result: Any) -> Any:
    """The 1.0 result for a 0.3 agent's answer to a translated request."""
    if method_v1 == "SendMessage":
        return event_from_v03(result)
    if method_v1 in ("GetTask", "CancelTask"):
        return task_from_v03(result)
    return result


def error_to_v03(error: Mapping[str, Any]) -> dict[str, Any]:
    """A 1.0 JSON-RPC error object as 0.3 expects it (0.3 codes, plain ``data``)."""
    code = error.get("code")
    out: dict[str, Any] = {
        "code": code if code in V03_ERROR_CODES else -32600,
        "message": error.get("message"),
    }
    return out


# ------------------------------------------------------------------------------- card

_SCHEME_KINDS = {
    "apiKeySecurityScheme": "apiKey",
    "httpAuthSecurityScheme": "http",
    "oauth2SecurityScheme": "oauth2",
    "openIdConnectSecurityScheme": "openIdConnect",
    "mtlsSecurityScheme": "mutualTLS",
}


def _scheme_to_v03(scheme: Mapping[str, Any]) -> dict[str, Any]:
    for member, kind in _SCHEME_KINDS.items():
        if isinstance(scheme.get(member), dict):
            out = {**scheme[member], "type": kind}
            if kind == "apiKey" and "location" in out:
                out["in"] = out.pop("location")
            return out
    return {"type": "http", "scheme": "bearer"}  # pragma: no cover - a card has one member


#: Where our server publishes its card in 0.3 form, for a 0.3 client's card resolver
#: (a2a-sdk 0.3.x: ``A2ACardResolver(..., agent_card_path=AGENT_CARD_PATH_V03)``).
AGENT_CARD_PATH_V03 = "/.well-known/agent-card-0.3.json"
_CARD_MEMBERS_V03 = frozenset(
    [
        "additionalInterfaces",
        "capabilities",
        "defaultInputModes",
        "defaultOutputModes",
        "description",
        "documentationUrl",
        "iconUrl",
        "name",
        "preferredTransport",
        "protocolVersion",
        "provider",
        "security",
        "securitySchemes",
        "skills",
        "supportsAuthenticatedExtendedCard",
        "url",
        "version",
    ]
)


def card_to_v03(card: Mapping[str, Any]) -> dict[str, Any]:
    """A 1.0 agent card as a 0.3 card: its JSON-RPC interface as ``url``; members the
    0.3 schema lacks, and the 1.0 ``signatures`` (they cover the 1.0 form), left out."""
    interfaces = [i for i in card.get("supportedInterfaces", []) if isinstance(i, dict)]
    jsonrpc = [i for i in interfaces if str(i.get("protocolBinding")).upper() == "JSONRPC"]
    primary = (jsonrpc or interfaces or [{}])[0]
    out: dict[str, Any] = {
        k: v
        for k, v in card.items()
        if k not in ("supportedInterfaces", "securityRequirements", "securitySchemes")
    }
    out["protocolVersion"] = "0.3.0"
    out["url"] = primary.get("url", "")
    out["preferredTransport"] = "JSONRPC"
    capabilities = dict(card.get("capabilities") or {})
    if capabilities.pop("extendedAgentCard", None):
        out["supportsAuthenticatedExtendedCard"] = True
    out["capabilities"] = capabilities
    schemes = card.get("securitySchemes")
    if isinstance(schemes, dict):
        out["securitySchemes"] = {n: _scheme_to_v03(s) for n, s in schemes.items()}
    requirements = card.get("securityRequirements")
    if isinstance(requirements, list):
        out["security"] = [
            {n: (v or {}).get("list", []) for n, v in (r.get("schemes") or {}).items()}
            for r in requirements
        ]
    out["skills"] = [
        {
            **{k: v for k, v in s.items() if k != "securityRequirements"},
            "tags": s.get("tags", []),
        }
        for s in card.get("skills", [])
    ]
    return {k: v for k, v in out.items() if k in _CARD_MEMBERS_V03}


def card_endpoint_v03(card: Mapping[str, Any]) -> str | None:
    """The JSON-RPC URL of a 0.3 card (``url`` when its preferred transport is
    JSON-RPC, else a JSON-RPC ``additionalInterfaces`` entry), or None."""
    version = card.get("protocolVersion")
    if not isinstance(version, str) or not version.startswith("0.3"):
        return None
    preferred = str(card.get("preferredTransport") or "JSONRPC").upper()
    if preferred == "JSONRPC" and isinstance(card.get("url"), str):
        return str(card["url"])
    for interface in card.get("additionalInterfaces") or []:
        if isinstance(interface, dict) and str(interface.get("transport")).upper() == "JSONRPC":
            url = interface.get("url")
            return url if isinstance(url, str) else None
    return None
