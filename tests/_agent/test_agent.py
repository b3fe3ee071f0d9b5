"""Agent declarations: skill schemas, dispatch rules, dependencies, the Context seams."""

from __future__ import annotations

import sys
import textwrap
import types
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from keycard_agents import (
    Actor,
    ActorChain,
    Agent,
    AgentDependency,
    Caller,
    ConfigurationError,
    Context,
    Dependency,
    HttpDependency,
    McpDependency,
    Principal,
    SkillCall,
    UserId,
    skill,
)
from keycard_agents._a2a.parts import to_parts
from keycard_agents.a2a import InvalidAgentResponseError, InvalidParamsError, Message, Part, Role


class Itinerary(BaseModel):
    city: str
    days: int
    stops: list[str] = []


class Preferences(BaseModel):
    budget: Literal["low", "high"] = "low"


class Planner(Agent):
    """Plans trips.

    Second paragraph is not part of the description.
    """

    name = "planner"
    dependencies = (
        AgentDependency("calendar", url="http://127.0.0.1:9002", scopes=["calendar:read"]),
        McpDependency("maps", url="http://127.0.0.1:9003/mcp", scopes=["maps:read"]),
        HttpDependency("weather", resource="https://weather.test/api", scopes=["weather"]),
    )

    @skill(
        description="Plan a trip", tags=["travel"], examples=["plan Paris"], scopes=["trips:plan"]
    )
    async def plan(
        self, ctx: Context, city: str, days: int = 3, prefs: Preferences | None = None
    ) -> Itinerary:
        return Itinerary(city=city, days=days)

    @skill
    async def summarize(self, ctx: Context, text: str) -> str:
        """Summarize a text."""
        return text[:10]

    @skill(id="ping", anonymous=True)
    async def health(self) -> dict[str, bool]:
        return {"ok": True}


def _message(*parts: Part) -> Message:
    return Message(message_id="m", role=Role.USER, parts=list(parts))


def test_skills_are_collected_in_declaration_order_with_metadata() -> None:
    agent = Planner()
    assert list(agent.skills) == ["plan", "summarize", "ping"]
    plan = agent.skills["plan"]
    assert (plan.name, plan.description, plan.tags, plan.examples, plan.scopes) == (
        "Plan",
        "Plan a trip",
        ("travel",),
        ("plan Paris",),
        ("trips:plan",),
    )
    assert plan.takes_context
    assert plan.parameters == ("city", "days", "prefs")
    assert agent.skills["summarize"].description == "Summarize a text."
    ping = agent.skills["ping"]
    assert ping.anonymous
    assert not ping.takes_context
    assert ping.method_name == "health"
    assert agent.agent_name == "planner"
    assert agent.agent_description == "Plans trips."


def test_input_schema_from_plain_types_models_and_defaults() -> None:
    schema = Planner().skills["plan"].input_schema()
    assert schema["type"] == "object"
    assert schema["required"] == ["city"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["city"]["type"] == "string"
    assert props["days"] == {"default": 3, "title": "Days", "type": "integer"}
    assert {"$ref": "#/$defs/Preferences"} in props["prefs"]["anyOf"]
    assert schema["$defs"]["Preferences"]["properties"]["budget"]["enum"] == ["low", "high"]


def test_output_schema_from_return_annotation() -> None:
    skills = Planner().skills
    out = skills["plan"].output_schema()
    assert out["title"] == "Itinerary"
    assert out["required"] == ["city", "days"]
    assert skills["summarize"].output_schema() == {"type": "string"}
    assert skills["ping"].output_schema() == {
        "type": "object",
        "additionalProperties": {"type": "boolean"},
    }
    assert skills["summarize"].output_modes == ("text/plain",)
    assert skills["plan"].output_modes == ("application/json",)
    assert skills["summarize"].input_modes == ("text/plain", "application/json")


def test_skills_in_modules_without_future_annotations() -> None:
    source = textwrap.dedent(
        """
        from pydantic import BaseModel
        from keycard_agents import Agent, skill
        from keycard_agents import Context

        class Out(BaseModel):
            total: float

        class Adder(Agent):
            @skill
            async def add(self, ctx: Context, a: float, b: float = 1.5) -> Out:
                return Out(total=a + b)
        """
    )
    module = types.ModuleType("kc_runtime_annotations")
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, module.__name__, "exec"), module.__dict__)  # noqa: S102
        agent = module.Adder()
    finally:
        del sys.modules[module.__name__]
    add = agent.skills["add"]
    assert add.input_schema()["properties"]["b"]["default"] == 1.5
    assert add.output_schema()["title"] == "Out"
    assert add.validate_arguments({"a": "2"}) == {"a": 2.0, "b": 1.5}


def test_parameter_names_that_shadow_pydantic_attributes_work() -> None:
    class Odd(Agent):
        @skill
        async def run(self, ctx: Context, schema: str, json: int, copy: bool = False) -> None:
            return None

    odd = Odd().skills["run"]
    assert set(odd.input_schema()["properties"]) == {"schema", "json", "copy"}
    assert odd.validate_arguments({"schema": "s", "json": 1}) == {
        "schema": "s",
        "json": 1,
        "copy": False,
    }


def test_declaration_mistakes_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="async def"):

        class Sync(Agent):
            @skill  # type: ignore[type-var]
            def run(self) -> None: ...

    with pytest.raises(ConfigurationError, match="declared by both"):

        class Twice(Agent):
            @skill(id="x")
            async def a(self) -> None: ...

            @skill(id="x")
            async def b(self) -> None: ...

    class Varargs(Agent):
        @skill
        async def run(self, ctx: Context, *items: str) -> None: ...

    with pytest.raises(ConfigurationError, match=r"\*args"):
        Varargs()

    class Unresolvable(Agent):
        @skill
        async def run(self, ctx: Context, x: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigurationError, match="cannot resolve its type annotations"):
        Unresolvable()

    with pytest.raises(ConfigurationError, match="unique"):

        class Deps(Agent):
            dependencies = (HttpDependency("a", resource="x"), McpDependency("a", url="y"))

    with pytest.raises(ConfigurationError, match="list of strings"):
        AgentDependency("a", scopes="read write")
    with pytest.raises(ConfigurationError, match="list of strings"):
        skill(scopes="read")
    with pytest.raises(ConfigurationError, match="token_endpoint"):
        Planner(issuer="http://127.0.0.1:9000")


def test_subclass_inherits_and_overrides_skills() -> None:
    class Base(Agent):
        @skill
        async def one(self) -> int:
            return 1

        @skill
        async def two(self) -> int:
            return 2

    class Child(Base):
        async def two(self) -> int:  # no longer a skill
            return 22

        @skill(id="three")
        async def one(self) -> int:  # same method, new skill id
            return 3

    assert list(Base().skills) == ["one", "two"]
    assert list(Child().skills) == ["three"]


def test_dependency_params() -> None:
    assert [d.to_params() for d in Planner.dependencies] == [
        {
            "kind": "agent",
            "name": "calendar",
            "scopes": ["calendar:read"],
            "url": "http://127.0.0.1:9002",
        },
        {
            "kind": "mcp",
            "name": "maps",
            "scopes": ["maps:read"],
            "url": "http://127.0.0.1:9003/mcp",
        },
        {
            "kind": "http",
            "name": "weather",
            "scopes": ["weather"],
            "resource": "https://weather.test/api",
        },
    ]
    by_name = AgentDependency("helper", description="resolved by name")
    assert by_name.target is None
    assert by_name.to_params() == {
        "kind": "agent",
        "name": "helper",
        "scopes": [],
        "description": "resolved by name",
    }
    with pytest.raises(ConfigurationError):
        AgentDependency("")


# ------------------------------------------------------------------------- dispatch


def test_data_part_is_a_typed_call() -> None:
    agent = Planner()
    call = agent.route(
        _message(Part(text="ignored"), Part(data={"skill": "plan", "arguments": {"city": "Oslo"}}))
    )
    assert call == SkillCall("plan", {"city": "Oslo"})
    kwargs = agent.skills["plan"].validate_arguments(call.arguments)
    assert kwargs == {"city": "Oslo", "days": 3, "prefs": None}
    assert agent.route(_message(Part(data={"skill": "ping"}))) == SkillCall("ping", {})


def test_invalid_arguments_list_every_problem() -> None:
    plan = Planner().skills["plan"]
    with pytest.raises(InvalidParamsError) as caught:
        plan.validate_arguments({"days": "many", "prefs": {"budget": "huge"}, "colour": "red"})
    error = caught.value
    fields = {p["field"] for p in error.data["errors"]}
    assert fields == {"city", "days", "prefs.budget", "colour"}
    for field in ("city", "days", "prefs.budget", "colour"):
        assert field in error.message
    assert "huge" not in error.message
    with pytest.raises(InvalidParamsError, match="must be a JSON object"):
        plan.validate_arguments(["Oslo"])


def test_unknown_skill_lists_the_skills() -> None:
    with pytest.raises(InvalidParamsError, match="unknown skill 'fly'") as caught:
        Planner().route(_message(Part(data={"skill": "fly", "arguments": {}})))
    assert "plan(city, days, prefs): Plan a trip" in caught.value.message
    assert caught.value.data == {"skills": ["plan", "summarize", "ping"]}


def test_plain_text_goes_to_the_single_string_skill() -> None:
    call = Planner().route(_message(Part(text="first"), Part(text="second")))
    assert call == SkillCall("summarize", {"text": "first\nsecond"})


def test_ambiguous_or_unroutable_text_gives_a_helpful_error() -> None:
    class Two(Agent):
        @skill
        async def a(self, ctx: Context, q: str) -> str:
            return q

        @skill
        async def b(self, ctx: Context, q: str) -> str:
            return q

    with pytest.raises(InvalidParamsError, match="several skills accept plain text") as caught:
        Two().route(_message(Part(text="hi")))
    assert "a(q)" in caught.value.message
    assert "b(q)" in caught.value.message
    assert '{"skill": "<id>", "arguments": {...}}' in caught.value.message

    class NoText(Agent):
        @skill
        async def add(self, a: int, b: int) -> int:
            return a + b

    with pytest.raises(InvalidParamsError, match="no skill of this agent takes a single text"):
        NoText().route(_message(Part(text="1 + 2")))
    with pytest.raises(InvalidParamsError, match="neither text nor a typed skill call"):
        NoText().route(_message(Part(url="https://x.test/f")))


def test_routing_errors_never_name_extended_skills() -> None:
    """The public card leaves ``extended`` skills out; so do errors any caller can read."""

    class Guarded(Agent):
        @skill
        async def a(self, q: str) -> str:
            return q

        @skill(extended=True, scopes=("admin",))
        async def vault(self, note: str) -> str:
            """Internal tool only admins see."""
            return note

    for message in (
        _message(Part(text="hi")),
        _message(Part(data={"skill": "fly", "arguments": {}})),
        _message(Part(url="https://x.test/f")),
    ):
        with pytest.raises(InvalidParamsError) as caught:
            Guarded().route(message)
        assert "a(q)" in caught.value.message
        assert "vault" not in caught.value.message
        assert "Internal tool" not in caught.value.message
        assert "vault" not in str(caught.value.data)

    class Hidden(Agent):
        @skill(extended=True)
        async def only(self, n: int) -> int:
            return n

    with pytest.raises(InvalidParamsError, match="No skills are public") as caught:
        Hidden().route(_message(Part(text="hi")))
    assert "only" not in caught.value.message


def test_route_text_can_be_overridden() -> None:
    class Calculator(Agent):
        @skill
        async def add(self, a: int, b: int) -> int:
            return a + b

        def route_text(self, text: str) -> SkillCall:
            a, _, b = text.partition("+")
            return SkillCall("add", {"a": a.strip(), "b": b.strip()})

    agent = Calculator()
    call = agent.route(_message(Part(text="1 + 2")))
    assert agent.skills["add"].validate_arguments(call.arguments) == {"a": 1, "b": 2}


# ---------------------------------------------------------------------- results


def test_result_parts() -> None:
    skills = Planner().skills
    assert skills["summarize"].result_parts("short") == [Part(text="short")]
    parts = skills["plan"].result_parts(Itinerary(city="Oslo", days=2))
    assert parts == [
        Part(data={"city": "Oslo", "days": 2, "stops": []}, media_type="application/json")
    ]
    assert skills["plan"].result_parts(None) == []
    with pytest.raises(InvalidAgentResponseError, match="does not match its return annotation"):
        skills["plan"].result_parts({"city": 1})


def test_to_parts() -> None:
    assert to_parts("t") == [Part(text="t")]
    assert to_parts(b"\x00") == [Part(raw=b"\x00", media_type="application/octet-stream")]
    assert to_parts({"a": (1, 2)}) == [Part(data={"a": [1, 2]}, media_type="application/json")]
    assert to_parts([Part(text="a"), Part(text="b")]) == [Part(text="a"), Part(text="b")]
    assert to_parts(None) == []
    with pytest.raises(InvalidAgentResponseError, match="cannot send a object"):
        to_parts(object())


# ---------------------------------------------------------------------- context


class _NullSink:
    async def status_update(self, message: Message) -> None:
        raise AssertionError("not used")

    async def add_artifact(self, parts: Any, **kwargs: Any) -> None:
        raise AssertionError("not used")

    async def append_artifact(self, artifact_id: str, parts: Any, **kwargs: Any) -> None:
        raise AssertionError("not used")


def _context(delegation: Any = None, principal: Principal | None = None) -> Context:
    return Context(
        caller=Caller(principal, token="secret-token"),
        task_id="t1",
        context_id="c1",
        skill_id="plan",
        message=_message(Part(text="hello")),
        sink=_NullSink(),
        dependencies=Planner().dependency_map,
        delegation=delegation,
    )


def test_context_exposes_the_verified_principal() -> None:
    principal = Principal(
        user="alice",
        issuer="https://sts.test",
        audience=("http://127.0.0.1:9001",),
        scopes=frozenset({"trips:plan"}),
        actors=ActorChain([Actor("frontend")]),
        txn="txn-1",
    )
    ctx = _context(principal=principal)
    assert (ctx.user, ctx.scopes, ctx.txn, ctx.text) == (
        UserId("alice", issuer="https://sts.test"),
        frozenset({"trips:plan"}),
        "txn-1",
        "hello",
    )
    # A user is (origin issuer, sub): it prints as the name, equals no bare string.
    assert ctx.user is not None
    assert (str(ctx.user), f"{ctx.user}", ctx.user.sub) == ("alice", "alice", "alice")
    assert ctx.user != "alice"
    assert ctx.user != UserId("alice", issuer="https://idp.test")
    assert len({ctx.user, UserId("alice", issuer="https://sts.test")}) == 1
    assert ctx.actors.subjects() == ("frontend",)
    anonymous = _context()
    assert (anonymous.user, anonymous.scopes, anonymous.txn) == (None, frozenset(), None)
    assert len(anonymous.actors) == 0
    assert "secret-token" not in repr(ctx) + repr(ctx._caller)


def test_dependency_without_delegation_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="no delegation configured"):
        _context().dependency("calendar")
    with pytest.raises(ConfigurationError, match=r"unknown dependency 'mail'.*calendar, maps"):
        _context().dependency("mail")


def test_dependency_handles_come_from_the_delegation_provider() -> None:
    calls: list[tuple[Dependency, Caller]] = []

    class Provider:
        def handle(self, dependency: Dependency, *, caller: Caller, context: Context) -> Any:
            calls.append((dependency, caller))
            return f"handle:{dependency.name}:{context.task_id}"

    ctx = _context(Provider())
    assert ctx.dependency("maps") == "handle:maps:t1"
    assert ctx.dependency("maps") == "handle:maps:t1"  # cached per context
    assert len(calls) == 1
    dependency, caller = calls[0]
    assert isinstance(dependency, McpDependency)
    assert caller.token == "secret-token"


def test_dependency_by_its_declaration_gives_the_same_handle() -> None:
    class Provider:
        def handle(self, dependency: Dependency, *, caller: Caller, context: Context) -> Any:
            return f"handle:{dependency.name}"

    ctx = _context(Provider())
    calendar, _, weather = Planner.dependencies
    assert isinstance(calendar, AgentDependency)
    assert isinstance(weather, HttpDependency)
    assert ctx.dependency(calendar) == ctx.dependency("calendar") == "handle:calendar"
    handle: object = ctx.dependency(weather)  # typed HttpApiCalls; this provider is a fake
    assert handle == "handle:weather"
    impostor = AgentDependency("calendar", url="http://127.0.0.1:9999")
    with pytest.raises(ConfigurationError, match="not the one this agent declares"):
        ctx.dependency(impostor)
