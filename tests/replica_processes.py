"""Two token-service replicas, two agent replicas and one more agent, each a process.

What the multi-process replica tests (and ``benchmarks/bench_replicas.py``) run: every
process is ``keycard-agents sts`` or ``keycard-agents serve`` on its own loopback port,
sharing one real Redis through ``[redis] url`` / ``KEYCARD_REDIS_URL``. The issuer and
Front's canonical URL are those of replica 1 (where a load balancer would be); each
Front replica exchanges at "its" token service replica.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis_support import free_port

from keycard_agents.auth import SigningKey
from keycard_agents.sts import TokenService, hash_client_secret, load_config, new_client_secret

TESTS = Path(__file__).resolve().parent
USER_SCOPES = ("front.use", "echo.read")
PASSWORD = "replica-wonderland"
REDIRECT = "http://127.0.0.1:7777/callback"
#: Each Redis command's time limit in every process. A command's reply waits behind
#: whatever else the process's event loop has to do: with 200 users in flight on a busy
#: 2-core machine that wait passed one second, and the request failed closed (503).
REDIS_TIMEOUT = 3.0


@dataclass
class Process:
    name: str
    port: int
    args: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.args, env=self.env, stdout=handle, stderr=subprocess.STDOUT, cwd=TESTS
        )
        handle.close()

    def wait_ready(self, path: str, deadline: float = 60.0) -> None:
        until = time.monotonic() + deadline
        while time.monotonic() < until:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


@dataclass
class Replicas:
    sts: list[Process]
    fronts: list[Process]
    echo: Process
    minter: TokenService
    redis_url: str
    prober: SigningKey
    config_paths: list[Path] = field(default_factory=list)

    @property
    def front_url(self) -> str:
        """Front's canonical URL (the audience of its tokens): replica 1's."""
        return self.fronts[0].url

    def user_token(self, user: str, *, txn: str | None = None) -> str:
        return self.minter.issue_user_token(
            user, audience=self.front_url, scopes=USER_SCOPES, may_act="front", txn=txn
        )

    def all(self) -> list[Process]:
        return [*self.sts, *self.fronts, self.echo]

    def stop(self) -> None:
        for process in self.all():
            process.stop()


def _inline(jwk: dict[str, str]) -> str:
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in jwk.items()) + " }"


def _config(
    path: Path,
    *,
    issuer: str,
    key_dir: Path,
    front: str,
    echo: str,
    hashes: dict[str, str],
    redis_url: str,
    prober: dict[str, str],
) -> None:
    path.write_text(
        f"""
issuer = "{issuer}"
key_dir = "{key_dir}"

[redis]
url = "{redis_url}"
timeout = {REDIS_TIMEOUT}

[[agents]]
client_id = "front"
resource = "{front}"
auth = "client_secret"
secret_hash = "{hashes["front"]}"
scopes = ["front.use", "echo.read"]
dependencies = ["{echo}"]

[[agents]]
client_id = "echo"
resource = "{echo}"
auth = "client_secret"
secret_hash = "{hashes["echo"]}"
scopes = ["echo.read"]

[[agents]]
client_id = "prober"
resource = "https://prober.test/"
auth = "private_key_jwt"
jwks = {{ keys = [ {_inline(prober)} ] }}
scopes = ["echo.read"]

[[users]]
username = "alice"
password = "{PASSWORD}"
scopes = ["front.use", "echo.read"]

[[clients]]
client_id = "app"
redirect_uris = ["{REDIRECT}"]
""",
        encoding="utf-8",
    )


def start_replicas(
    directory: Path,
    redis_url: str,
    *,
    lease: float = 2.0,
    backends: tuple[str, str] = ("asyncio", "trio"),
) -> Replicas:
    """Start Redis-sharing replicas: 2 token services, 2 Fronts (one per backend), 1 Echo."""
    directory.mkdir(parents=True, exist_ok=True)
    sts_ports = [free_port(), free_port()]
    front_ports = [free_port(), free_port()]
    echo_port = free_port()
    issuer = f"http://127.0.0.1:{sts_ports[0]}"
    front_url = f"http://127.0.0.1:{front_ports[0]}"
    echo_url = f"http://127.0.0.1:{echo_port}"
    plain = {name: new_client_secret() for name in ("front", "echo")}
    hashes = {name: hash_client_secret(secret) for name, secret in plain.items()}
    cache_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    prober = SigningKey.generate("ES256")
    base_env = {
        **os.environ,
        "PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "KEYCARD_REDIS_URL": redis_url,
        "KEYCARD_REDIS_CACHE_KEY": cache_key,
        "KEYCARD_REDIS_TASK_LEASE": str(lease),
        "KEYCARD_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
        "REPLICA_ECHO_URL": echo_url,
    }
    cli = [sys.executable, "-c", "from keycard_agents._cli import main; raise SystemExit(main())"]
    sts: list[Process] = []
    paths: list[Path] = []
    for index, port in enumerate(sts_ports):
        path = directory / f"sts{index + 1}.toml"
        _config(
            path,
            issuer=issuer,
            key_dir=directory / f"keys{index + 1}",
            front=front_url,
            echo=echo_url,
            hashes=hashes,
            redis_url=redis_url,
            prober=prober.public_jwk(),
        )
        paths.append(path)
        sts.append(
            Process(
                f"sts{index + 1}",
                port,
                [*cli, "sts", "--config", str(path), "--port", str(port), "--log-level", "warning"],
                base_env,
                directory / f"sts{index + 1}.log",
            )
        )
    fronts = []
    for index, port in enumerate(front_ports):
        env = {**base_env, "KEYCARD_CLIENT_ID": "front", "KEYCARD_CLIENT_SECRET": plain["front"]}
        fronts.append(
            Process(
                f"front{index + 1}",
                port,
                [
                    *cli,
                    "serve",
                    "replica_agents:Front",
                    "--port",
                    str(port),
                    "--url",
                    front_url,
                    "--issuer",
                    issuer,
                    "--token-endpoint",
                    f"{sts[index].url}/token",
                    "--backend",
                    backends[index],
                    "--log-level",
                    "warning",
                ],
                env,
                directory / f"front{index + 1}.log",
            )
        )
    echo_env = {**base_env, "KEYCARD_CLIENT_ID": "echo", "KEYCARD_CLIENT_SECRET": plain["echo"]}
    echo_env.pop("KEYCARD_REDIS_URL")  # a single Echo: memory is enough
    echo = Process(
        "echo",
        echo_port,
        [
            *cli,
            "serve",
            "replica_agents:Echo",
            "--port",
            str(echo_port),
            "--url",
            echo_url,
            "--issuer",
            issuer,
            "--token-endpoint",
            f"{sts[0].url}/token",
            "--log-level",
            "warning",
        ],
        echo_env,
        directory / "echo.log",
    )
    replicas = Replicas(
        sts=sts,
        fronts=fronts,
        echo=echo,
        minter=TokenService(load_config(paths[0])),
        redis_url=redis_url,
        prober=prober,
        config_paths=paths,
    )
    try:
        for process in sts:
            process.start()
        for process in sts:
            process.wait_ready("/jwks.json")
        # Both replicas' keys are published before any token is verified.
        until = time.monotonic() + 30
        while len(httpx.get(f"{issuer}/jwks.json", timeout=2).json()["keys"]) < 2:
            if time.monotonic() > until:
                raise RuntimeError("the token service replicas did not publish their keys")
            time.sleep(0.2)
        for process in [*fronts, echo]:
            process.start()
        for process in [*fronts, echo]:
            process.wait_ready("/.well-known/agent-card.json")
    except BaseException:
        replicas.stop()
        raise
    return replicas
