"""A fake Hetzner Cloud API that hcloud-python accepts unchanged; each server a real SSH endpoint.

    async with FakeHetzner() as fake:
        fake.add_ssh_key("blitzclaw-provisioner", client_key.export_public_key().decode())
        client = hcloud.Client(fake.token, api_endpoint=f"{fake.base_url}/v1", poll_interval=0.01)
        fake.out_of_capacity.add("fsn1")       # POST /servers there: 412 resource_unavailable

Each created server gets the next loopback address (127.0.1.1, 127.0.1.2, ...) as its
`public_net.ipv4.ip` and a FakeServer (fake_server.py) listening there on `fake.ssh_port`, one
port for all of them, so a client connects to `<ipv4>:<ssh_port>`. Boot: once the server is
running (and `boot_delay` later) the fake "runs cloud-init": SSH comes up (sudo allowing what
the user data's `sudo:` line allows), then it POSTs `{"server_name", "host_key"}` to the
`BLITZCLAW_READY_URL=` line of the user data with `Authorization: Bearer
<BLITZCLAW_SERVER_SECRET=>`, retrying non-2xx answers a few times. `host_key` is the .pub file's
line, comment included: `ssh-ed25519 AAAA... root@<name>`.
Rebuild wipes the home, generates a new host key and boots again (a second ready call). Names in
`silent_names` boot without calling back (a server stuck in cloud-init). Several fakes (in
several processes: one cannot hold 10,000 servers' listening and accepted sockets within a
20,000-fd limit) can share one `ssh_port` that the caller holds, each with its own range of
addresses (127.0.1.0 + `first_address` on).

Wire facts (WIRE.md "Hetzner Cloud"): errors `{"error":{"code","message","details"}}`, pages of at
most 50 with `meta.pagination`, `RateLimit-Limit/Remaining/Reset` on every answer (`rate_limit`,
3600 an hour, refilling evenly; a request with the budget spent is a 429 `rate_limit_exceeded`),
no `datacenter` on servers. Actions finish `action_delay` seconds after they
start (0: by the time anyone asks). Server type prices here are invented for the fake.

Why one module: a fake of one API (Hetzner Cloud's servers, actions, keys) that hcloud-python
accepts unchanged.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import orjson
from aiohttp import web

from blitzclawd.testing.fake_server import FakeServer

MAX_USER_DATA = 32 * 1024
MAX_PER_PAGE = 50
_READY_URL = re.compile(r"^\s*BLITZCLAW_READY_URL=(\S+)\s*$", re.MULTILINE)
_SERVER_SECRET = re.compile(r"^\s*BLITZCLAW_SERVER_SECRET=(\S+)\s*$", re.MULTILINE)
_SUDO = re.compile(r"^\s*sudo:\s*\[?\s*([\"'])(.*?)\1", re.MULTILINE | re.DOTALL)
_SUDO_SPEC = re.compile(r"^\S+\s*=\s*\([^)]*\)\s*(?:NOPASSWD:)?\s*")
_USER_NAME = re.compile(r"^\s*(?:-\s*)?name:\s*[\"']?([a-z_][a-z0-9_-]*)")
_KEY_ITEM = re.compile(r"^\s*-\s*[\"']?((?:ssh-|ecdsa-|sk-)\S+\s+[A-Za-z0-9+/=]+[^\"']*)[\"']?\s*$")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?")
_SET_TERM = re.compile(r"\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*")
_RETIRED = {
    "announced": "2025-10-16T00:00:00+00:00",
    "unavailable_after": "2026-01-01T00:00:00+00:00",
}

LOCATIONS: dict[str, dict[str, Any]] = {
    "fsn1": {"id": 1, "description": "Falkenstein DC Park 1", "country": "DE",
             "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071,
             "network_zone": "eu-central"},
    "nbg1": {"id": 2, "description": "Nuremberg DC Park 1", "country": "DE", "city": "Nuremberg",
             "latitude": 49.452102, "longitude": 11.076665, "network_zone": "eu-central"},
    "hel1": {"id": 3, "description": "Helsinki DC Park 1", "country": "FI", "city": "Helsinki",
             "latitude": 60.169855, "longitude": 24.938379, "network_zone": "eu-central"},
}  # fmt: skip
# name: (id, cores, memory GB, disk GB, monthly net EUR, retired)
SERVER_TYPES: dict[str, tuple[int, int, float, int, str, bool]] = {
    "cx22": (22, 2, 4.0, 40, "3.7900", True),
    "cx32": (23, 4, 8.0, 80, "6.8000", True),
    "cx23": (122, 2, 4.0, 40, "3.4900", False),
    "cx33": (123, 4, 8.0, 80, "5.4900", False),
    "cx43": (124, 8, 16.0, 160, "9.4900", False),
}
IMAGES: dict[str, tuple[int, str, str, str]] = {  # name: (id, description, flavor, version)
    "debian-12": (114690387, "Debian 12", "debian", "12"),
    "debian-13": (234690387, "Debian 13", "debian", "13"),
    "ubuntu-24.04": (161547269, "Ubuntu 24.04", "ubuntu", "24.04"),
}


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details if details is not None else {}


def _invalid(field_name: str, message: str) -> _ApiError:
    details = {"fields": [{"name": field_name, "messages": [message]}]}
    return _ApiError(422, "invalid_input", f"invalid input in field '{field_name}'", details)


@dataclass
class ReadyCall:
    server_name: str
    url: str
    status: int  # HTTP status, 0 when the connection failed
    host_key: str


@dataclass
class HetznerServer:
    """One server as the fake keeps it; `ssh` is its SSH side."""

    id: int
    name: str
    server_type: str
    location: str
    image: str
    user_data: str
    labels: dict[str, str]
    ssh_key_names: list[str]
    ipv4: str
    ipv6: str
    created: str
    ssh: FakeServer
    status: str = "initializing"
    generation: int = 0  # bumped by rebuild and delete: a boot of an older disk stops
    booted: asyncio.Event = field(default_factory=asyncio.Event)  # this boot's callback is done


@dataclass
class _Action:
    id: int
    command: str
    resources: list[dict[str, Any]]
    started: str
    status: str = "running"
    finished: str | None = None
    error: dict[str, str] | None = None
    on_done: Callable[[], None] | None = None

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "command": self.command,
            "status": self.status,
            "progress": 0 if self.status == "running" else 100,
            "started": self.started,
            "finished": self.finished,
            "resources": self.resources,
            "error": self.error,
        }


class FakeHetzner:
    """Servers, actions, server types, locations, images and SSH keys, the way hcloud reads them."""

    def __init__(
        self,
        *,
        token: str = "fake-hcloud-token-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM",
        root: Path | None = None,
        boot_delay: float = 0.0,
        action_delay: float = 0.0,
        gateway_start_delay: float = 0.0,
        ready_attempts: int = 5,
        rate_limit: int = 3600,
        ssh_port: int = 0,
        first_address: int = 1,
    ) -> None:
        self.token = token
        self.boot_delay = boot_delay
        self.action_delay = action_delay
        self.gateway_start_delay = gateway_start_delay
        self.ready_attempts = ready_attempts
        self.rate_limit = rate_limit
        self.out_of_capacity: set[str] = set()  # POST /servers there: 412 resource_unavailable
        self.unavailable_locations: set[str] = set()  # also listed as available: false
        self.placement_failures: set[str] = set()  # created there, then the action fails
        self.silent_names: set[str] = set()  # these never call back
        self.server_limit: int | None = None  # the project's quota: 403 resource_limit_exceeded
        self.servers: dict[int, HetznerServer] = {}
        self.ready_calls: list[ReadyCall] = []
        self.requests = 0
        self.rate_limited = 0  # requests answered 429 (budget spent, or answer_429)
        self.request_log: list[str] = []  # "GET /v1/servers?page=2&per_page=50", in order
        self.created = self.deleted = self.rebuilt = 0
        self.base_url = ""
        self.ssh_port = ssh_port  # 0: claim one at start; else the caller holds 127.0.0.1:port
        self._ssh_keys: dict[str, dict[str, Any]] = {}
        self._actions: dict[int, _Action] = {}
        self._ids = iter(range(40_000_001, 1 << 40))
        self._ips = iter(range(first_address, 1 << 24))
        self._bucket, self._bucket_at = float(rate_limit), time.monotonic()
        self._force_429 = 0
        self._root = root
        self._own_root = root is None
        self._tasks: set[asyncio.Task[None]] = set()
        self._port_claim: socket.socket | None = None
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"FakeHetzner(base_url={self.base_url!r}, servers={len(self.servers)})"

    # -- test hooks ------------------------------------------------------------------------------

    def add_ssh_key(self, name: str, public_key: str) -> int:
        """Register a project SSH key (what `ssh_keys` names refer to at server create)."""
        key = asyncssh.import_public_key(public_key)
        key_id = next(self._ids)
        self._ssh_keys[name] = {
            "id": key_id,
            "name": name,
            "fingerprint": key.get_fingerprint("md5").removeprefix("MD5:"),
            "public_key": public_key.strip(),
            "labels": {},
            "created": _now(),
        }
        return key_id

    def by_name(self, name: str) -> HetznerServer:
        for server in self.servers.values():
            if server.name == name:
                return server
        raise KeyError(name)

    def answer_429(self, count: int = 1) -> None:
        """The next `count` requests answer 429 (hcloud then sleeps 1 s or more per retry)."""
        self._force_429 += count

    async def wait_booted(self, name: str) -> HetznerServer:
        """Until the server's current boot is done (ready call made or skipped); bound it."""
        server = self.by_name(name)
        await server.booted.wait()
        return server

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="fake-hetzner-"))
        if not self.ssh_port:
            # Holding 127.0.0.1:P (bound, not listening) keeps every other fake and any wildcard
            # listener off port P, so all our servers can listen on 127.x.y.z:P.
            self._port_claim = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._port_claim.bind(("127.0.0.1", 0))
            self.ssh_port = self._port_claim.getsockname()[1]
        self._http = aiohttp.ClientSession()
        app = web.Application(middlewares=[self._middleware])
        self._routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.base_url = "http://{}:{}".format(*self._runner.addresses[0][:2])
        return self.base_url

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(s.ssh.stop() for s in self.servers.values()))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._port_claim is not None:
            self._port_claim.close()
            self._port_claim = None
        if self._own_root and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    async def __aenter__(self) -> FakeHetzner:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/servers", self._list_servers)
        router.add_post("/v1/servers", self._create_server)
        router.add_get("/v1/servers/{id:\\d+}", self._get_server)
        router.add_put("/v1/servers/{id:\\d+}", self._update_server)
        router.add_delete("/v1/servers/{id:\\d+}", self._delete_server)
        router.add_post("/v1/servers/{id:\\d+}/actions/rebuild", self._rebuild_server)
        router.add_get("/v1/servers/{id:\\d+}/actions", self._server_actions)
        router.add_get("/v1/servers/{id:\\d+}/actions/{action:\\d+}", self._server_action)
        router.add_get("/v1/actions", self._list_actions)
        router.add_get("/v1/actions/{action:\\d+}", self._get_action)
        router.add_get("/v1/server_types", self._list_server_types)
        router.add_get("/v1/server_types/{id:\\d+}", self._get_server_type)
        router.add_get("/v1/locations", self._list_locations)
        router.add_get("/v1/locations/{id:\\d+}", self._get_location)
        router.add_get("/v1/images", self._list_images)
        router.add_get("/v1/ssh_keys", self._list_ssh_keys)
        router.add_post("/v1/ssh_keys", self._create_ssh_key)
        router.add_get("/v1/ssh_keys/{id:\\d+}", self._get_ssh_key)

    # -- cross-cutting: auth, rate limit, errors -------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests += 1
        self.request_log.append(f"{request.method} {request.path_qs}")
        spent, headers = self._spend_rate_limit()
        try:
            forced = self._force_429 > 0
            if forced:
                self._force_429 -= 1
            if forced or spent:
                self.rate_limited += 1
                raise _ApiError(429, "rate_limit_exceeded", "limit of requests per hour reached")
            self._authenticate(request)
            response = await handler(request)
        except _ApiError as exc:
            response = _json(exc.status, _error_body(exc.code, exc.message, exc.details))
        except web.HTTPException as exc:  # unknown route or method
            code = "not_found" if exc.status == 404 else "method_not_allowed"
            response = _json(exc.status, _error_body(code, exc.reason, {}))
        response.headers.update(headers)
        response.headers["X-Correlation-Id"] = uuid.uuid4().hex[:16]
        return response

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(token.encode(), self.token.encode()):
            raise _ApiError(401, "unauthorized", "unable to authenticate")

    def _spend_rate_limit(self) -> tuple[bool, dict[str, str]]:
        """(the budget was spent: answer 429, headers). Like Hetzner's: one request takes one
        from a bucket of `rate_limit` that refills evenly over the hour; an empty one refuses."""
        now, per_second = time.monotonic(), self.rate_limit / 3600
        self._bucket = min(self.rate_limit, self._bucket + (now - self._bucket_at) * per_second)
        self._bucket_at = now
        spent = self._bucket < 1
        if not spent:
            self._bucket -= 1
        refill = (self.rate_limit - self._bucket) / per_second if per_second else 0
        return spent, {
            "RateLimit-Limit": str(self.rate_limit),
            "RateLimit-Remaining": str(int(self._bucket)),
            "RateLimit-Reset": str(int(time.time() + refill)),
        }

    # -- servers ---------------------------------------------------------------------------------

    async def _list_servers(self, request: web.Request) -> web.Response:
        servers = sorted(self.servers.values(), key=lambda s: s.id)
        name = request.query.get("name")
        if name is not None:
            servers = [s for s in servers if s.name == name]
        statuses = request.query.getall("status", [])
        if statuses:
            servers = [s for s in servers if s.status in statuses]
        selector = request.query.get("label_selector")
        if selector:
            match = _label_selector(selector)
            servers = [s for s in servers if match(s.labels)]
        return _page(request, "servers", [self._server_json(s) for s in servers])

    async def _get_server(self, request: web.Request) -> web.Response:
        return _json(200, {"server": self._server_json(self._server(request))})

    async def _update_server(self, request: web.Request) -> web.Response:
        server, body = self._server(request), await _body(request)
        if "name" in body:
            self._check_name(body["name"], server.id)
            server.name = body["name"]
        if "labels" in body:
            server.labels = _check_labels(body["labels"])
        return _json(200, {"server": self._server_json(server)})

    async def _create_server(self, request: web.Request) -> web.Response:
        body = await _body(request)
        name = body.get("name")
        self._check_name(name, None)
        server_type = self._lookup_type(body.get("server_type"))
        image = self._lookup_image(body.get("image"))
        location = body.get("location", "fsn1")
        if location not in LOCATIONS:
            raise _invalid("location", "location not found")
        if "datacenter" in body:
            raise _ApiError(
                410, "deprecated_api_endpoint", "the datacenter property was removed, use location"
            )
        key_names = [self._lookup_ssh_key(k) for k in body.get("ssh_keys") or []]
        user_data = body.get("user_data") or ""
        if not isinstance(user_data, str) or len(user_data.encode()) > MAX_USER_DATA:
            raise _invalid("user_data", f"must be a string of at most {MAX_USER_DATA} bytes")
        labels = _check_labels(body.get("labels") or {})
        start = body.get("start_after_create", True)
        if self.server_limit is not None and len(self.servers) >= self.server_limit:
            details = {"limits": [{"name": "server_limit"}]}
            raise _ApiError(403, "resource_limit_exceeded", "server limit exceeded", details)
        if location in self.out_of_capacity | self.unavailable_locations:
            raise _ApiError(412, "resource_unavailable", "error during placement")
        assert self._root is not None, "FakeHetzner.start() first"
        server_id, ip = next(self._ids), self._next_ipv4()
        server = HetznerServer(
            id=server_id,
            name=name,
            server_type=server_type,
            location=location,
            image=image,
            user_data=user_data,
            labels=labels,
            ssh_key_names=key_names,
            ipv4=ip,
            ipv6=f"2001:db8:{server_id >> 16 & 0xFFFF:x}:{server_id & 0xFFFF:x}::/64",
            created=_now(),
            ssh=FakeServer(
                name,
                ip,
                self.ssh_port,
                home=self._root / str(server_id) / "home",
                user_keys=self._login_keys(key_names, user_data),
                sudo_rules=_sudo_rules(user_data),
                gateway_start_delay=self.gateway_start_delay,
            ),
        )
        self.servers[server_id] = server
        self.created += 1
        initial = self._server_json(server)
        failed = location in self.placement_failures
        create = self._action("create_server", server, lambda: self._created(server, failed))
        if failed:
            create.error = {"code": "placement_error", "message": "error during placement"}
        next_actions = []
        if start:
            start_action = self._action("start_server", server, lambda: self._started(server))
            start_action.error = create.error
            next_actions.append(start_action.json())
        body_out = {
            "server": initial,
            "action": create.json(),
            "next_actions": next_actions,
            "root_password": None if key_names else "fake-root-password",
        }
        return _json(201, body_out)

    def _created(self, server: HetznerServer, failed: bool) -> None:
        server.status = "off" if failed else "starting"

    def _started(self, server: HetznerServer) -> None:
        if server.status == "starting":
            server.status = "running"
            self._boot(server)

    async def _delete_server(self, request: web.Request) -> web.Response:
        server = self._unlocked(self._server(request))
        server.status, server.generation = "deleting", server.generation + 1
        self.deleted += 1
        await server.ssh.stop()
        action = self._action("delete_server", server, lambda: self._forget(server))
        return _json(200, {"action": action.json()})

    def _forget(self, server: HetznerServer) -> None:
        self.servers.pop(server.id, None)
        if self._root is not None:
            shutil.rmtree(self._root / str(server.id), ignore_errors=True)

    async def _rebuild_server(self, request: web.Request) -> web.Response:
        server, body = self._unlocked(self._server(request)), await _body(request)
        server.image = self._lookup_image(body.get("image"))
        user_data = body.get("user_data")
        if user_data is not None:
            if not isinstance(user_data, str) or len(user_data.encode()) > MAX_USER_DATA:
                raise _invalid("user_data", f"must be a string of at most {MAX_USER_DATA} bytes")
            server.user_data = user_data
        server.ssh.user_keys = self._login_keys(server.ssh_key_names, server.user_data)
        server.ssh.sudo_rules = _sudo_rules(server.user_data)
        server.status, server.generation = "rebuilding", server.generation + 1
        server.booted = asyncio.Event()
        self.rebuilt += 1
        await server.ssh.stop()
        server.ssh.wipe()  # a fresh disk: no files, no journal, a new host key
        action = self._action("rebuild_server", server, lambda: self._rebuilt(server))
        return _json(200, {"action": action.json(), "root_password": None})

    def _rebuilt(self, server: HetznerServer) -> None:
        server.status = "running"
        self._boot(server)

    def _server(self, request: web.Request) -> HetznerServer:
        server = self.servers.get(int(request.match_info["id"]))
        if server is None:
            raise _ApiError(404, "not_found", "server not found")
        return server

    def _login_keys(self, key_names: list[str], user_data: str) -> dict[str, list[str]]:
        """Who may log in with what: Hetzner puts the project keys on root, cloud-init adds the
        user data's `ssh_authorized_keys`."""
        keys = _user_keys(user_data)
        keys.setdefault("root", []).extend(self._ssh_keys[k]["public_key"] for k in key_names)
        return keys

    def _unlocked(self, server: HetznerServer) -> HetznerServer:
        """Hetzner refuses a second action while one is running on the server."""
        for action in self._actions.values():
            if action.status == "running" and any(r["id"] == server.id for r in action.resources):
                raise _ApiError(423, "locked", f"server is locked by a running {action.command}")
        return server

    def _check_name(self, name: object, own_id: int | None) -> None:
        if not isinstance(name, str) or len(name) > 253 or not _HOSTNAME.fullmatch(name):
            raise _invalid("name", "must be a valid hostname (RFC 1123)")
        if any(s.name == name and s.id != own_id for s in self.servers.values()):
            details = {"fields": [{"name": "name"}]}
            raise _ApiError(409, "uniqueness_error", "server name is already used", details)

    def _lookup_type(self, ref: object) -> str:
        for name, (type_id, *_rest, retired) in SERVER_TYPES.items():
            if ref in (name, type_id):
                if retired:
                    raise _invalid("server_type", f"server type {name} is deprecated")
                return name
        raise _invalid("server_type", "server type not found")

    def _lookup_image(self, ref: object) -> str:
        for name, (image_id, *_rest) in IMAGES.items():
            if ref in (name, image_id):
                return name
        raise _invalid("image", "image not found")

    def _lookup_ssh_key(self, ref: object) -> str:
        for name, key in self._ssh_keys.items():
            if ref in (name, key["id"]):
                return name
        raise _invalid("ssh_keys", f"ssh key {ref!r} not found")

    def _next_ipv4(self) -> str:
        # 127.0.1.1, 127.0.1.2, ...: .0 and .255 are skipped; the whole 127/8 is loopback.
        for n in self._ips:
            address = ipaddress.IPv4Address("127.0.1.0") + n
            if address.packed[3] not in (0, 255):
                return str(address)
        raise _ApiError(412, "resource_unavailable", "the fake ran out of loopback addresses")

    def _server_json(self, server: HetznerServer) -> dict[str, Any]:
        ipv4 = {
            "id": server.id * 10 + 1,
            "ip": server.ipv4,
            "blocked": False,
            "dns_ptr": f"static.{server.ipv4}.clients.your-server.de",
        }
        ipv6 = {"id": server.id * 10 + 2, "ip": server.ipv6, "blocked": False, "dns_ptr": []}
        server_type = _server_type_json(server.server_type, self.unavailable_locations)
        return {
            "id": server.id,
            "name": server.name,
            "status": server.status,
            "created": server.created,
            "public_net": {"ipv4": ipv4, "ipv6": ipv6, "floating_ips": [], "firewalls": []},
            "private_net": [],
            "server_type": server_type,
            "location": _location_json(server.location),
            "image": _image_json(server.image),
            "iso": None,
            "rescue_enabled": False,
            "locked": False,
            "backup_window": None,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 21990232555520,
            "protection": {"delete": False, "rebuild": False},
            "labels": dict(server.labels),
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": server_type["disk"],
            "placement_group": None,
        }

    # -- boot: SSH comes up, then cloud-init's ready call ----------------------------------------

    def _boot(self, server: HetznerServer) -> None:
        task = asyncio.get_running_loop().create_task(self._run_boot(server, server.generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_boot(self, server: HetznerServer, generation: int) -> None:
        booted = server.booted
        try:
            if self.boot_delay > 0:
                await asyncio.sleep(self.boot_delay)  # the simulated boot time
            if server.generation != generation:
                return  # rebuilt or deleted meanwhile
            await server.ssh.start()
            if server.name not in self.silent_names:
                await self._call_ready(server, generation)
        finally:
            booted.set()

    async def _call_ready(self, server: HetznerServer, generation: int) -> None:
        url = _env_line(_READY_URL, server.user_data)
        secret = _env_line(_SERVER_SECRET, server.user_data)
        if url is None or self._http is None:
            return  # user data without the ready lines: nobody to call
        # ready.sh sends /etc/ssh/ssh_host_ed25519_key.pub as it is: with its comment.
        host_key = f"{server.ssh.host_key_line} root@{server.name}"
        payload = {"server_name": server.name, "host_key": host_key}
        headers = {"Authorization": f"Bearer {secret or ''}"}
        for attempt in range(self.ready_attempts):  # like curl --retry N --retry-all-errors
            if server.generation != generation:
                return
            try:
                async with self._http.post(
                    url, json=payload, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                ) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            self.ready_calls.append(ReadyCall(server.name, url, status, payload["host_key"]))
            if 200 <= status < 300:
                return
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0))  # the retry back-off

    # -- actions ---------------------------------------------------------------------------------

    def _action(
        self, command: str, server: HetznerServer, on_done: Callable[[], None] | None
    ) -> _Action:
        action = _Action(
            id=next(self._ids),
            command=command,
            resources=[{"id": server.id, "type": "server"}],
            started=_now(),
            on_done=on_done,
        )
        self._actions[action.id] = action
        asyncio.get_running_loop().call_later(self.action_delay, self._finish, action)
        return action

    def _finish(self, action: _Action) -> None:
        action.status = "error" if action.error else "success"
        action.finished = _now()
        if action.on_done is not None:
            action.on_done()

    async def _get_action(self, request: web.Request) -> web.Response:
        return _json(200, {"action": self._find_action(request).json()})

    async def _list_actions(self, request: web.Request) -> web.Response:
        wanted = {int(i) for i in request.query.getall("id", []) if i.isdigit()}
        actions = [a.json() for a in self._actions.values() if a.id in wanted]
        return _page(request, "actions", actions)

    async def _server_actions(self, request: web.Request) -> web.Response:
        server = self._server(request)
        actions = [
            a.json()
            for a in self._actions.values()
            if any(r["id"] == server.id for r in a.resources)
        ]
        return _page(request, "actions", actions)

    async def _server_action(self, request: web.Request) -> web.Response:
        server, action = self._server(request), self._find_action(request)
        if not any(r["id"] == server.id for r in action.resources):
            raise _ApiError(404, "not_found", "action not found")
        return _json(200, {"action": action.json()})

    def _find_action(self, request: web.Request) -> _Action:
        action = self._actions.get(int(request.match_info["action"]))
        if action is None:
            raise _ApiError(404, "not_found", "action not found")
        return action

    # -- catalog: server types, locations, images, SSH keys -------------------------------------

    async def _list_server_types(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        types = [
            _server_type_json(n, self.unavailable_locations)
            for n in SERVER_TYPES
            if name in (None, n)
        ]
        return _page(request, "server_types", types)

    async def _get_server_type(self, request: web.Request) -> web.Response:
        wanted = int(request.match_info["id"])
        for name, (type_id, *_rest) in SERVER_TYPES.items():
            if type_id == wanted:
                return _json(
                    200, {"server_type": _server_type_json(name, self.unavailable_locations)}
                )
        raise _ApiError(404, "not_found", "server type not found")

    async def _list_locations(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        return _page(
            request, "locations", [_location_json(n) for n in LOCATIONS if name in (None, n)]
        )

    async def _get_location(self, request: web.Request) -> web.Response:
        wanted = int(request.match_info["id"])
        for name, location in LOCATIONS.items():
            if location["id"] == wanted:
                return _json(200, {"location": _location_json(name)})
        raise _ApiError(404, "not_found", "location not found")

    async def _list_images(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        return _page(request, "images", [_image_json(n) for n in IMAGES if name in (None, n)])

    async def _list_ssh_keys(self, request: web.Request) -> web.Response:
        name, fingerprint = request.query.get("name"), request.query.get("fingerprint")
        keys = [
            key
            for key in self._ssh_keys.values()
            if name in (None, key["name"]) and fingerprint in (None, key["fingerprint"])
        ]
        return _page(request, "ssh_keys", keys)

    async def _get_ssh_key(self, request: web.Request) -> web.Response:
        wanted = int(request.match_info["id"])
        for key in self._ssh_keys.values():
            if key["id"] == wanted:
                return _json(200, {"ssh_key": key})
        raise _ApiError(404, "not_found", "ssh key not found")

    async def _create_ssh_key(self, request: web.Request) -> web.Response:
        body = await _body(request)
        name, public_key = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not name:
            raise _invalid("name", "is required")
        if name in self._ssh_keys:
            details = {"fields": [{"name": "name"}]}
            raise _ApiError(409, "uniqueness_error", "SSH key with the same name exists", details)
        try:
            self.add_ssh_key(name, str(public_key))
        except (asyncssh.KeyImportError, TypeError):
            raise _invalid("public_key", "invalid public key") from None
        self._ssh_keys[name]["labels"] = _check_labels(body.get("labels") or {})
        return _json(201, {"ssh_key": self._ssh_keys[name]})


# -- JSON shapes ---------------------------------------------------------------------------------


def _server_type_json(name: str, unavailable: set[str]) -> dict[str, Any]:
    type_id, cores, memory, disk, monthly, retired = SERVER_TYPES[name]
    monthly_net = float(monthly)
    hourly_net = monthly_net / 720  # Hetzner bills hourly up to the monthly cap

    def price(location: str) -> dict[str, Any]:
        return {
            "location": location,
            "price_hourly": {"net": f"{hourly_net:.4f}", "gross": f"{hourly_net * 1.19:.4f}"},
            "price_monthly": {"net": f"{monthly_net:.4f}", "gross": f"{monthly_net * 1.19:.4f}"},
            "included_traffic": 21990232555520,
            "price_per_tb_traffic": {"net": "1.0000", "gross": "1.1900"},
        }

    return {
        "id": type_id,
        "name": name,
        "description": name.upper(),
        "category": "cost_optimized",
        "cores": cores,
        "memory": memory,
        "disk": disk,
        "storage_type": "local",
        "cpu_type": "shared",
        "architecture": "x86",
        "prices": [price(location) for location in LOCATIONS],
        "locations": [
            {
                "id": LOCATIONS[location]["id"],
                "name": location,
                "deprecation": dict(_RETIRED) if retired else None,
                "available": not retired and location not in unavailable,
                "recommended": not retired,
            }
            for location in LOCATIONS
        ],
        "deprecated": retired,
        "deprecation": dict(_RETIRED) if retired else None,
    }


def _location_json(name: str) -> dict[str, Any]:
    return {"name": name, **LOCATIONS[name]}


def _image_json(name: str) -> dict[str, Any]:
    image_id, description, flavor, version = IMAGES[name]
    return {
        "id": image_id,
        "type": "system",
        "status": "available",
        "name": name,
        "description": description,
        "image_size": None,
        "disk_size": 5,
        "created": "2025-01-01T00:00:00+00:00",
        "created_from": None,
        "bound_to": None,
        "os_flavor": flavor,
        "os_version": version,
        "rapid_deploy": True,
        "protection": {"delete": False},
        "deprecated": None,
        "deleted": None,
        "labels": {},
        "architecture": "x86",
    }


# -- helpers -------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _error_body(code: str, message: str, details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise _ApiError(400, "json_error", "invalid JSON in the request body") from None
    if not isinstance(body, dict):
        raise _ApiError(400, "json_error", "the request body must be a JSON object")
    return body


def _page(request: web.Request, key: str, items: list[dict[str, Any]]) -> web.Response:
    try:
        page = int(request.query.get("page", "1"))
        per_page = min(int(request.query.get("per_page", "25")), MAX_PER_PAGE)
    except ValueError:
        raise _invalid("page", "page and per_page must be integers") from None
    if page < 1 or per_page < 1:
        raise _invalid("page", "page and per_page must be positive")
    last = max(1, math.ceil(len(items) / per_page))
    pagination = {
        "page": page,
        "per_page": per_page,
        "previous_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if page < last else None,
        "last_page": last,
        "total_entries": len(items),
    }
    chunk = items[(page - 1) * per_page : page * per_page]
    return _json(200, {key: chunk, "meta": {"pagination": pagination}})


def _check_labels(labels: object) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise _invalid("labels", "must be an object of strings")
    for key, value in labels.items():
        if not _valid_key(key) or key.startswith("hetzner.cloud/"):
            raise _invalid("labels", f"invalid label key {key!r}")
        if not _valid_value(value):
            raise _invalid("labels", f"invalid label value for {key!r}")
    return dict(labels)


def _label_selector(selector: str) -> Callable[[dict[str, str]], bool]:
    """Hetzner's label selector: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b), comma-joined."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    checks = [_selector_term(term.strip()) for term in terms]
    return lambda labels: all(check(labels) for check in checks)


def _selector_term(term: str) -> Callable[[dict[str, str]], bool]:
    in_set = _SET_TERM.fullmatch(term)
    if in_set:
        key, op, values = in_set.groups()
        allowed = {v.strip() for v in values.split(",")}
        if _valid_key(key) and all(_valid_value(v) for v in allowed):
            positive = op == "in"
            return lambda labels: (labels.get(key) in allowed) == positive
    elif "!=" in term:
        key, value = (part.strip() for part in term.split("!=", 1))
        if _valid_key(key) and _valid_value(value):
            return lambda labels: labels.get(key) != value
    elif "=" in term:
        key, value = (part.strip() for part in term.replace("==", "=", 1).split("=", 1))
        if _valid_key(key) and _valid_value(value):
            return lambda labels: labels.get(key) == value
    elif term.startswith("!") and _valid_key(term[1:]):
        return lambda labels: term[1:] not in labels
    elif _valid_key(term):
        return lambda labels: term in labels
    raise _invalid("label_selector", f"invalid label selector term {term!r}")


def _valid_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _HOSTNAME.fullmatch(prefix)):
        return False
    return bool(_LABEL_NAME.fullmatch(name))


def _valid_value(value: object) -> bool:
    return isinstance(value, str) and (not value or bool(_LABEL_NAME.fullmatch(value)))


def _user_keys(user_data: str) -> dict[str, list[str]]:
    """`ssh_authorized_keys` of the user data, per user (a line scan, not a YAML parser: it reads
    the shapes cloud-config writes). Top-level keys go to root, Hetzner images' login (UNVERIFIED).
    """
    keys: dict[str, list[str]] = {}
    user, in_users, collecting = "root", False, False
    for line in user_data.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():  # a top-level key
            in_users, user, collecting = stripped.startswith("users:"), "root", False
        named = _USER_NAME.match(line) if in_users else None
        item = _KEY_ITEM.match(line) if collecting else None
        if named:
            user, collecting = named.group(1), False
        elif stripped.startswith("ssh_authorized_keys:"):
            collecting = True
        elif item:
            keys.setdefault(user, []).append(item.group(1).strip())
        else:
            collecting = False
    return keys


def _sudo_rules(user_data: str) -> list[str] | None:
    """The commands the user data's `sudo:` entries allow (None: it has none, allow all)."""
    matches = list(_SUDO.finditer(user_data))
    if not matches:
        return None
    rules: list[str] = []
    for match in matches:
        spec = _SUDO_SPEC.sub("", " ".join(match.group(2).split()))  # YAML folds line breaks
        rules.extend(" ".join(rule.split()) for rule in spec.split(",") if rule.strip())
    return rules


def _env_line(pattern: re.Pattern[str], user_data: str) -> str | None:
    match = pattern.search(user_data)
    if match is None:
        return None
    value = match.group(1)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]  # systemd's EnvironmentFile and sh both drop the quotes
    return value
