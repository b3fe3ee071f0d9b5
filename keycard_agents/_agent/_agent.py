"""The Agent base class: skills, dependencies and how a message reaches a skill.

Skills are declared as async methods with :func:`skill`; their parameters and return
annotations give the JSON Schemas (draft 2020-12, as pydantic generates them) that the
agent card publishes in our delegation extension (A2A 1.0 skills have no schema field).

Dispatch rule for an inbound A2A message (A2A 1.0 §4.1.4 ``Message``/``Part``):

1. A ``data`` part holding an object with a ``"skill"`` key is a typed call:
   ``{"skill": "plan", "arguments": {"city": "Paris"}}``. The arguments are validated
   against the skill's input schema; problems raise InvalidParams listing every field.
2. Otherwise the text parts, joined by newlines, go to :meth:`Agent.route_text`. By default
   that picks the single skill whose only parameter is a ``str``; with no such skill, or
   several, it raises InvalidParams with a message listing the skills and how to call them.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from keycard_agents._a2a.errors import (
    ContentTypeNotSupportedError,
    InvalidAgentResponseError,
    InvalidParamsError,
)
from keycard_agents._a2a.parts import accepts, is_skill_call, part_media_type, to_parts
from keycard_agents._a2a.types import AgentExtension, AgentProvider, Message, Part
from keycard_agents._agent._context import Context
from keycard_agents._agent._dependencies import Dependency
from keycard_agents._errors import ConfigurationError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from keycard_agents._oauth._credentials import ApplicationCredential
    from keycard_agents._oauth._exchange import TokenExchangeClient

__all__ = [
    "Agent",
    "AppFactory",
    "Skill",
    "SkillCall",
    "register_app_factory",
    "skill",
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: Builds the ASGI app serving an agent: ``(agent, **options) -> app``. The server layer
#: above registers ``create_app`` here (see :func:`register_app_factory`), so that
#: :meth:`Agent.asgi_app` needs no import of it.
AppFactory = Callable[..., "ASGIApp"]
_APP_FACTORY: AppFactory | None = None


def register_app_factory(factory: AppFactory) -> None:
    """Make ``factory`` what :meth:`Agent.asgi_app` calls (the server registers ``create_app``)."""
    global _APP_FACTORY
    _APP_FACTORY = factory


_SKILL_MARK = "__keycard_skill__"


# ---------------------------------------------------------------------------- skills


@dataclass(frozen=True)
class _SkillOptions:
    id: str | None
    name: str | None
    description: str | None
    tags: tuple[str, ...]
    examples: tuple[str, ...]
    scopes: tuple[str, ...]
    anonymous: bool
    input_modes: tuple[str, ...] | None
    output_modes: tuple[str, ...] | None
    require_user: bool | None = None
    extended: bool = False


@typing.overload
def skill(func: F, /) -> F: ...
@typing.overload
def skill(
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    tags: Sequence[str] = (),
    examples: Sequence[str] = (),
    scopes: Sequence[str] = (),
    anonymous: bool = False,
    input_modes: Sequence[str] | None = None,
    output_modes: Sequence[str] | None = None,
    require_user: bool | None = None,
    extended: bool = False,
) -> Callable[[F], F]: ...
def skill(
    func: F | None = None,
    /,
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    tags: Sequence[str] = (),
    examples: Sequence[str] = (),
    scopes: Sequence[str] = (),
    anonymous: bool = False,
    input_modes: Sequence[str] | None = None,
    output_modes: Sequence[str] | None = None,
    require_user: bool | None = None,
    extended: bool = False,
) -> F | Callable[[F], F]:
    """Mark an async method of an :class:`Agent` subclass as an A2A skill.

    The skill id defaults to the method name, the description to its docstring.
    ``scopes`` are required in the caller's token; ``anonymous=True`` allows calls
    without a token (scopes are then not checked). ``require_user=True`` refuses tokens
    whose subject is a client rather than a user (a client-credentials token, RFC 9068
    §2.2) with HTTP 403; the default is the agent class's ``require_user`` (``False``:
    any verified subject). ``extended=True`` leaves the skill off the public agent card:
    it is listed on the authenticated extended card (``GetExtendedAgentCard``) of callers
    whose token holds its scopes. Visibility is not authorization: calls are checked the
    same way either way.
    """
    for label, value in (("tags", tags), ("examples", examples), ("scopes", scopes)):
        if isinstance(value, str):
            raise ConfigurationError(f"skill {label} must be a list of strings", setting=label)
    options = _SkillOptions(
        id=id,
        name=name,
        description=description,
        tags=tuple(tags),
        examples=tuple(examples),
        scopes=tuple(scopes),
        anonymous=anonymous,
        input_modes=None if input_modes is None else tuple(input_modes),
        output_modes=None if output_modes is None else tuple(output_modes),
        require_user=require_user,
        extended=extended,
    )
    if anonymous and require_user:
        raise ConfigurationError(
            "a skill cannot be both anonymous and require_user", setting="require_user"
        )

    def mark(f: F) -> F:
        is_async = inspect.iscoroutinefunction(f)
        if not is_async:
            raise ConfigurationError(
                f"skill {getattr(f, '__qualname__', f)!r} must be an `async def` method",
                setting="skill",
            )
        setattr(f, _SKILL_MARK, options)
        return f

    if func is not None:
        return mark(func)
    return mark


@dataclass(frozen=True)
class SkillCall:
    """A resolved call: which skill, with which raw (not yet validated) arguments."""

    skill_id: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)


@dataclass(frozen=True)
class Skill:
    """A skill of an agent class, with its schemas resolved from the annotations."""

    id: str
    name: str
    description: str
    tags: tuple[str, ...]
    examples: tuple[str, ...]
    scopes: tuple[str, ...]
    anonymous: bool
    input_modes: tuple[str, ...]
    output_modes: tuple[str, ...]
    method_name: str
    takes_context: bool
    parameters: tuple[str, ...]
    text_parameter: str | None
    returns_text: bool
    input_model: type[BaseModel] = field(repr=False)
    output_adapter: TypeAdapter[Any] = field(repr=False)
    require_user: bool = False
    """Refuse tokens whose subject is a client (a client-credentials token)."""
    returns_message: bool = False
    """Annotated ``-> Message``: answers with that message directly, creating no task."""
    extended: bool = False
    """Listed only on the extended card of callers holding its scopes."""

    def input_schema(self) -> dict[str, Any]:
        schema = self.input_model.model_json_schema(by_alias=True)
        schema["title"] = f"{self.id} input"
        return schema

    def output_schema(self) -> dict[str, Any]:
        return self.output_adapter.json_schema(by_alias=True)

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        """Check raw arguments against the input schema; returns keyword arguments."""
        if not isinstance(arguments, Mapping):
            raise InvalidParamsError(
                f"arguments of skill {self.id!r} must be a JSON object",
                data={"errors": [{"field": "arguments", "message": "must be an object"}]},
            )
        try:
            parsed = self.input_model.model_validate(dict(arguments))
        except ValidationError as exc:
            problems = [
                {
                    "field": ".".join(str(p) for p in err["loc"]) or "arguments",
                    "message": err["msg"],
                }
                for err in exc.errors(include_url=False, include_input=False)
            ]
            listed = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            raise InvalidParamsError(
                f"invalid arguments for skill {self.id!r}: {listed}",
                data={"skill": self.id, "errors": problems},
            ) from exc
        return {name: getattr(parsed, f"p{i}") for i, name in enumerate(self.parameters)}

    def result_parts(self, value: Any) -> list[Part]:
        """The skill's return value as artifact parts (checked against the return type)."""
        if value is None:
            return []
        if isinstance(value, str):
            return [Part(text=value)]
        try:
            checked = self.output_adapter.validate_python(value)
            data = self.output_adapter.dump_python(checked, mode="json", by_alias=True)
        except (ValidationError, ValueError, TypeError) as exc:
            raise InvalidAgentResponseError(
                f"skill {self.id!r} returned a {type(value).__name__} that does not match "
                "its return annotation"
            ) from exc
        return to_parts(data)


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    return inspect.cleandoc(doc).split("\n\n", 1)[0].replace("\n", " ").strip()


def _is_context(name: str, annotation: Any) -> bool:
    if annotation is Context:
        return True
    return annotation is inspect.Parameter.empty and name in {"ctx", "context"}


def _build_skill(owner: type, method_name: str, func: Callable[..., Any]) -> Skill:
    options: _SkillOptions = getattr(func, _SKILL_MARK)
    skill_id = options.id or method_name
    where = f"skill {owner.__qualname__}.{method_name}"
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise ConfigurationError(
            f"{where}: cannot resolve its type annotations ({type(exc).__name__}: {exc}); "
            "define the types it uses at module level",
            setting=method_name,
        ) from exc
    params = list(inspect.signature(func).parameters.values())[1:]  # drop self
    takes_context = bool(params) and _is_context(
        params[0].name, hints.get(params[0].name, inspect.Parameter.empty)
    )
    if takes_context:
        params = params[1:]
    fields: dict[str, Any] = {}
    names: list[str] = []
    for i, param in enumerate(params):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ConfigurationError(
                f"{where}: parameter {param.name!r} must be a plain or keyword-only "
                "parameter (no *args, **kwargs or positional-only)",
                setting=method_name,
            )
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[f"p{i}"] = (annotation, Field(default, alias=param.name))
        names.append(param.name)
    model_name = f"{owner.__name__}_{skill_id}_input".replace("-", "_").replace(".", "_")
    try:
        input_model = create_model(model_name, __base__=_Arguments, **fields)
        return_type = hints.get("return", Any)
        output_adapter: TypeAdapter[Any] = TypeAdapter(return_type)
    except Exception as exc:  # pydantic raises several kinds for unsupported types
        raise ConfigurationError(
            f"{where}: its parameter or return types cannot be described as JSON Schema "
            f"({type(exc).__name__}: {exc})",
            setting=method_name,
        ) from exc
    text_parameter = None
    if len(params) == 1 and hints.get(params[0].name) is str:
        text_parameter = params[0].name
    returns_text = return_type is str
    returns_message = return_type is Message
    input_modes = options.input_modes or (
        ("text/plain", "application/json") if text_parameter else ("application/json",)
    )
    output_modes = options.output_modes or (
        ("text/plain",) if returns_text else ("application/json",)
    )
    return Skill(
        id=skill_id,
        name=options.name or method_name.replace("_", " ").capitalize(),
        description=options.description or _first_paragraph(func.__doc__) or skill_id,
        tags=options.tags,
        examples=options.examples,
        scopes=options.scopes,
        anonymous=options.anonymous,
        input_modes=input_modes,
        output_modes=output_modes,
        method_name=method_name,
        takes_context=takes_context,
        parameters=tuple(names),
        text_parameter=text_parameter,
        returns_text=returns_text,
        input_model=input_model,
        output_adapter=output_adapter,
        returns_message=returns_message,
        extended=options.extended,
        require_user=(
            options.require_user
            if options.require_user is not None
            else bool(getattr(owner, "require_user", False)) and not options.anonymous
        ),
    )


# ----------------------------------------------------------------------------- Agent


class Agent:
    """Subclass this, set the class attributes, and mark skills with :func:`skill`.

    Constructor options say where the agent is served and which token service issues
    the tokens it accepts:

    * ``url``: the agent's canonical URL. It is the audience of inbound tokens and the
      ``resource`` of its RFC 9728 metadata, exactly as given (a trailing ``/`` is kept:
      register the same string at the issuer); its A2A interfaces are served there.
    * ``issuer``: the token service's issuer identifier; ``token_endpoint`` its token
      endpoint (required with ``issuer``); ``metadata_url`` its RFC 8414 metadata
      (derived from the issuer when omitted).
    * Delegation (calling dependencies): ``credential`` is how the agent authenticates to
      the token service (default: :func:`~keycard_agents.credential_from_env`, looked up
      when a dependency is first called); ``exchange`` a ready
      :class:`~keycard_agents.auth.TokenExchangeClient` instead (you close it);
      ``trusted_issuers`` the authorization servers a called agent's RFC 9728 metadata may
      name (default: the exchange client's issuer).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[str] = "0.1.0"
    provider: ClassVar[AgentProvider | None] = None
    documentation_url: ClassVar[str | None] = None
    icon_url: ClassVar[str | None] = None
    dependencies: ClassVar[Sequence[Dependency]] = ()
    default_input_modes: ClassVar[Sequence[str]] = ("text/plain", "application/json")
    default_output_modes: ClassVar[Sequence[str]] = ("text/plain", "application/json")
    require_user: ClassVar[bool] = False
    """Default of ``@skill(require_user=)``: refuse client-credentials tokens (no user)."""
    extensions: ClassVar[Sequence[AgentExtension]] = ()
    """A2A extensions the agent supports, published in its card next to ours (§3.3.4).

    Requests must activate those marked ``required=True`` (``A2A-Extensions`` header)
    or are refused with ExtensionSupportRequiredError; skills see what a request
    activated as ``ctx.extensions``."""

    _skill_methods: ClassVar[dict[str, str]] = {}
    _resolved_skills: ClassVar[dict[str, Skill]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        methods: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if attr in methods.values():  # overridden: the subclass's version wins
                    methods = {k: v for k, v in methods.items() if v != attr}
                options: _SkillOptions | None = getattr(value, _SKILL_MARK, None)
                if options is None:
                    continue
                skill_id = options.id or attr
                if skill_id in methods:
                    raise ConfigurationError(
                        f"{cls.__qualname__}: skill id {skill_id!r} is declared by both "
                        f"{methods[skill_id]!r} and {attr!r}",
                        setting=attr,
                    )
                methods[skill_id] = attr
        cls._skill_methods = methods
        names = [d.name for d in cls.dependencies]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigurationError(
                f"{cls.__qualname__}: dependency names must be unique; repeated: "
                + ", ".join(duplicates),
                setting="dependencies",
            )

    def __init__(
        self,
        *,
        url: str | None = None,
        issuer: str | None = None,
        token_endpoint: str | None = None,
        metadata_url: str | None = None,
        credential: ApplicationCredential | None = None,
        exchange: TokenExchangeClient | None = None,
        trusted_issuers: Sequence[str] | None = None,
    ) -> None:
        if issuer is not None and token_endpoint is None:
            raise ConfigurationError(
                "token_endpoint is required when issuer is set (the agent card publishes it)",
                setting="token_endpoint",
            )
        # Exactly as given: it is the RFC 8707 resource tokens are issued for, and an
        # issuer that registered "https://host/a/" issues tokens for that string only.
        self.url = url or None
        self.issuer = issuer
        self.token_endpoint = token_endpoint
        self.metadata_url = metadata_url
        self.credential = credential
        self.exchange = exchange
        self.trusted_issuers = tuple(trusted_issuers) if trusted_issuers is not None else None
        self.skills  # noqa: B018 - resolve annotations now so mistakes surface at startup

    # -- introspection -----------------------------------------------------------------

    @classmethod
    def _skill_table(cls) -> dict[str, Skill]:
        cached: dict[str, Skill] | None = cls.__dict__.get("_resolved_skills")
        if cached is None:
            cached = {
                skill_id: _build_skill(cls, attr, getattr(cls, attr))
                for skill_id, attr in cls._skill_methods.items()
            }
            cls._resolved_skills = cached
        return cached

    @property
    def skills(self) -> Mapping[str, Skill]:
        """Skills by id, in declaration order."""
        return self._skill_table()

    @property
    def agent_name(self) -> str:
        return self.name or type(self).__name__

    @property
    def agent_description(self) -> str:
        return self.description or _first_paragraph(type(self).__doc__) or self.agent_name

    @property
    def dependency_map(self) -> Mapping[str, Dependency]:
        return {d.name: d for d in self.dependencies}

    # -- dispatch ----------------------------------------------------------------------

    def accepted_modes(self, skill: Skill | None = None) -> tuple[str, ...]:
        """The media types a message may carry: to ``skill``, or to any skill when ``None``.

        A skill accepts its ``inputModes`` and the agent's ``defaultInputModes``.
        """
        modes = list(self.default_input_modes)
        for each in self.skills.values() if skill is None else (skill,):
            modes.extend(m for m in each.input_modes if m not in modes)
        return tuple(modes)

    def check_media_types(self, message: Message, skill: Skill | None = None) -> None:
        """Refuse a part whose media type the agent (or ``skill``) does not accept.

        A2A 1.0 §3.3.2: ContentTypeNotSupportedError (-32005, HTTP 415). A typed skill
        call is the request itself, not content, and is always accepted.
        """
        modes = self.accepted_modes(skill)
        for index, part in enumerate(message.parts):
            if is_skill_call(part):
                continue
            media_type = part_media_type(part)
            if not accepts(modes, media_type):
                shown = media_type[:80] if media_type.isprintable() else "(unreadable)"
                target = f"skill {skill.id!r}" if skill is not None else "this agent"
                raise ContentTypeNotSupportedError(
                    f"part {index} has media type {shown!r}, which {target} does not accept; "
                    f"accepted: {', '.join(modes)}",
                    data={"mediaType": shown, "accepted": ", ".join(modes)},
                )

    def route(self, message: Message) -> SkillCall:
        """Which skill a message targets, with its raw arguments (see module docstring)."""
        for part in message.parts:
            if is_skill_call(part):
                skill_id = part.data["skill"]
                arguments = part.data.get("arguments", {})
                if not isinstance(skill_id, str) or skill_id not in self.skills:
                    raise InvalidParamsError(
                        f"unknown skill {skill_id!r}. {self.describe_skills()}",
                        data={"skills": self.public_skill_ids()},
                    )
                if arguments is None:
                    arguments = {}
                return SkillCall(skill_id, arguments)
        texts = [p.text for p in message.parts if p.text is not None]
        if not texts:
            raise InvalidParamsError(
                "the message has neither text nor a typed skill call. " + self.describe_skills()
            )
        return self.route_text("\n".join(texts))

    def route_text(self, text: str) -> SkillCall:
        """Route plain text to a skill. Override to add your own understanding of text.

        Default: the single skill whose only parameter is a ``str``.
        """
        candidates = [s for s in self.skills.values() if s.text_parameter is not None]
        if len(candidates) == 1:
            target = candidates[0]
            assert target.text_parameter is not None
            return SkillCall(target.id, {target.text_parameter: text})
        reason = (
            "several skills accept plain text"
            if candidates
            else "no skill of this agent takes a single text argument"
        )
        raise InvalidParamsError(
            f"cannot tell which skill plain text is for: {reason}. {self.describe_skills()}",
            data={"skills": self.public_skill_ids()},
        )

    def public_skill_ids(self) -> list[str]:
        """The ids of the skills on the public card (``extended`` ones are left out)."""
        return [s.id for s in self.skills.values() if not s.extended]

    def describe_skills(self) -> str:
        """A help text listing the public skills and the typed-call format.

        Skills declared ``extended=True`` are not named: this text goes to any caller,
        and those skills are shown only on the extended card of callers with their scopes.
        """
        public = [s for s in self.skills.values() if not s.extended]
        if not public:
            return "This agent has no skills." if not self.skills else "No skills are public."
        lines = ", ".join(f"{s.id}({', '.join(s.parameters)}): {s.description}" for s in public)
        return (
            f'Skills: {lines}. Call one with a data part {{"skill": "<id>", "arguments": {{...}}}}.'
        )

    async def call_skill(self, skill: Skill, ctx: Context, arguments: Mapping[str, Any]) -> Any:
        """Invoke a skill method with validated keyword arguments."""
        method = getattr(self, skill.method_name)
        if skill.takes_context:
            return await method(ctx, **arguments)
        return await method(**arguments)

    # -- serving -----------------------------------------------------------------------

    def asgi_app(self, **options: Any) -> ASGIApp:
        """This agent as an ASGI app, to run under any ASGI server or mount in another app.

        Options are those of :func:`keycard_agents.create_app`. When mounting under a
        path, use :class:`keycard_agents.AgentMount` and run the app's lifespan.
        """
        if _APP_FACTORY is None:  # pragma: no cover - importing keycard_agents registers it
            raise ConfigurationError(
                "no ASGI app factory is registered: import keycard_agents (its server "
                "registers create_app) before calling Agent.asgi_app()",
                setting="asgi_app",
            )
        return _APP_FACTORY(self, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.agent_name!r}, url={self.url!r})"
