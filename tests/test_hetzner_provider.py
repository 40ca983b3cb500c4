"""HetznerProvider against FakeHetzner over real HTTP, and the fake's servers over real SSH."""

from __future__ import annotations

import asyncio
import socket
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import hcloud
import pytest
from aiohttp import web
from hcloud.images import Image
from hcloud.server_types import ServerType

from blitzclawd.providers.base import CapacityError, ProviderError, ServerInfo, ServerProvider
from blitzclawd.providers.hetzner import HetznerProvider, RateLimit
from blitzclawd.testing.fake_hetzner import FakeHetzner

CLIENT_KEY = asyncssh.generate_private_key("ssh-ed25519")
KEY_NAME = "blitzclaw-provisioner"
SECRET = "srv-secret-4f1c9a"


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeHetzner]:
    async with FakeHetzner(root=tmp_path / "hetzner") as fake:
        fake.add_ssh_key(KEY_NAME, CLIENT_KEY.export_public_key().decode())
        yield fake


def provider(fake: FakeHetzner, **kwargs: Any) -> HetznerProvider:
    options: dict[str, Any] = {"ssh_keys": [KEY_NAME], "poll_interval": 0.01, **kwargs}
    return HetznerProvider(fake.token, api_endpoint=f"{fake.base_url}/v1", **options)


def cloud_config(ready_url: str, secret: str = SECRET) -> str:
    # The shape the real template has: the lines land in /etc/blitzclaw/server.env.
    return (
        "#cloud-config\n"
        "write_files:\n"
        "  - path: /etc/blitzclaw/server.env\n"
        "    permissions: '0600'\n"
        "    content: |\n"
        f"      BLITZCLAW_READY_URL={ready_url}\n"
        f"      BLITZCLAW_SERVER_SECRET={secret}\n"
    )


class ReadyEndpoint:
    """Our side of `POST /internal/instance-ready`, answering `fail_first` 503s first."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.fail_first = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.put_nowait({**body, "authorization": request.headers.get("Authorization")})
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"error": "not yet"}, status=503)
        return web.json_response({"ok": True})

    async def next_call(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            return await self.calls.get()


@asynccontextmanager
async def ready_endpoint() -> AsyncIterator[ReadyEndpoint]:
    endpoint = ReadyEndpoint()
    app = web.Application()
    app.router.add_post("/internal/instance-ready", endpoint.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    endpoint.url = f"http://{host}:{port}/internal/instance-ready"
    try:
        yield endpoint
    finally:
        await runner.cleanup()


async def ssh(
    info: ServerInfo, port: int, host_key: str, username: str = "root"
) -> asyncssh.SSHClientConnection:
    """A connection that trusts exactly `host_key` for this server."""
    known = asyncssh.import_known_hosts(f"[{info.ipv4}]:{port} {host_key}")
    return await asyncssh.connect(
        info.ipv4,
        port,
        username=username,
        client_keys=[CLIENT_KEY],
        known_hosts=known,
        agent_path=None,
        config=None,
    )


async def test_create_labels_user_data_and_keys(fake: FakeHetzner) -> None:
    hetzner: ServerProvider = provider(fake)
    info = await hetzner.create(name="bc-pool-1", user_data="#cloud-config\n", labels={"pool": "a"})
    assert info.name == "bc-pool-1" and info.status == "running"
    assert info.labels == {"pool": "a", "service": "blitzclaw"}
    assert (info.location, info.server_type) == ("fsn1", "cx23")
    assert info.ipv4 == "127.0.1.1" and info.created.tzinfo is not None
    kept = fake.servers[info.provider_id]
    assert kept.user_data == "#cloud-config\n"
    assert kept.ssh_key_names == [KEY_NAME] and kept.image == "debian-12"
    assert kept.ssh.host == info.ipv4 and kept.ssh.port == fake.ssh_port
    # the service label cannot be overridden by a caller
    other = await hetzner.create(name="bc-pool-2", user_data="", labels={"service": "x"})
    assert other.labels == {"service": "blitzclaw"} and other.ipv4 == "127.0.1.2"
    assert fake.created == 2


async def test_create_falls_back_when_a_location_is_out_of_capacity(fake: FakeHetzner) -> None:
    hetzner = provider(fake)
    fake.out_of_capacity.add("fsn1")  # 412 resource_unavailable on create
    info = await hetzner.create(name="bc-1", user_data="", labels={})
    assert info.location == "nbg1"
    assert [r for r in fake.request_log if r.startswith("POST")] == ["POST /v1/servers"] * 2

    fake.out_of_capacity.clear()
    fake.unavailable_locations.add("fsn1")  # the server type says so: fsn1 is not even tried
    posts = len([r for r in fake.request_log if r.startswith("POST")])
    assert (await hetzner.create(name="bc-2", user_data="", labels={})).location == "nbg1"
    assert len([r for r in fake.request_log if r.startswith("POST")]) == posts + 1


async def test_a_failed_placement_is_deleted_and_the_next_location_tried(
    fake: FakeHetzner,
) -> None:
    fake.placement_failures.add("fsn1")  # accepted, then the create action fails
    info = await provider(fake).create(name="bc-1", user_data="", labels={})
    assert info.location == "nbg1"
    assert fake.created == 2 and fake.deleted == 1
    assert [s.name for s in fake.servers.values()] == ["bc-1"]


async def test_no_capacity_anywhere_and_quota_errors(fake: FakeHetzner) -> None:
    hetzner = provider(fake, locations=("fsn1", "nbg1", "hel1"))
    fake.out_of_capacity.update({"fsn1", "nbg1", "hel1"})
    with pytest.raises(CapacityError) as caught:
        await hetzner.create(name="bc-1", user_data="", labels={})
    assert caught.value.code == "resource_unavailable"
    assert "fsn1" in str(caught.value) and "hel1" in str(caught.value)
    assert fake.servers == {}

    fake.out_of_capacity.clear()
    fake.server_limit = 0  # the project quota: another location would not help
    with pytest.raises(ProviderError) as quota:
        await hetzner.create(name="bc-1", user_data="", labels={})
    assert not isinstance(quota.value, CapacityError)
    assert quota.value.code == "resource_limit_exceeded"
    assert fake.request_log[-1] == "POST /v1/servers"  # tried once, not in every location


async def test_invalid_input_names_the_field(fake: FakeHetzner) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider(fake).create(name="bc-1", user_data="", labels={"bad key!": "x"})
    assert caught.value.code == "invalid_input" and "labels" in str(caught.value)
    with pytest.raises(ProviderError, match="'name'"):
        await provider(fake).create(name="not a hostname", user_data="", labels={})
    with pytest.raises(ProviderError, match="'ssh_keys'"):
        await provider(fake, ssh_keys=["nobody"]).create(name="bc-2", user_data="", labels={})


async def test_list_reads_every_page_and_only_our_servers(fake: FakeHetzner) -> None:
    hetzner = provider(fake, max_concurrency=8)
    await asyncio.gather(
        *(hetzner.create(name=f"bc-{i}", user_data="", labels={"pool": "main"}) for i in range(57)),
        *(hetzner.create(name=f"bc-o{i}", user_data="", labels={"pool": "old"}) for i in range(3)),
    )
    # a server of something else in the same project
    client = hcloud.Client(fake.token, api_endpoint=f"{fake.base_url}/v1")
    await asyncio.to_thread(
        client.servers.create, "not-ours", ServerType(name="cx23"), Image(name="debian-12")
    )
    main = await hetzner.list({"pool": "main"})
    assert sorted(s.name for s in main) == sorted(f"bc-{i}" for i in range(57))
    everything = await hetzner.list({})
    assert len(everything) == 60 and len({s.provider_id for s in everything}) == 60
    assert "not-ours" not in {s.name for s in everything}
    pages = [r for r in fake.request_log if r.startswith("GET /v1/servers?")]
    assert any("page=2" in r for r in pages) and all("per_page=50" in r for r in pages)
    assert await hetzner.list({"pool": "nowhere"}) == []


async def test_get_and_an_idempotent_delete(fake: FakeHetzner) -> None:
    hetzner = provider(fake)
    info = await hetzner.create(name="bc-1", user_data="", labels={})
    assert await hetzner.get(info.provider_id) == info
    booted = await asyncio.wait_for(fake.wait_booted("bc-1"), 10)
    host_key = booted.ssh.host_key_line
    await hetzner.delete(info.provider_id)
    assert await hetzner.get(info.provider_id) is None
    await hetzner.delete(info.provider_id)  # already gone: fine
    assert fake.deleted == 1 and fake.servers == {}
    with pytest.raises(OSError):  # the machine is gone: nothing listens there any more
        await ssh(info, fake.ssh_port, host_key)


async def test_rebuild_wipes_the_disk_and_boots_with_a_new_host_key(fake: FakeHetzner) -> None:
    hetzner = provider(fake)
    async with ready_endpoint() as ready:
        info = await hetzner.create(name="bc-1", user_data=cloud_config(ready.url), labels={})
        first = (await ready.next_call())["host_key"]
        async with await ssh(info, fake.ssh_port, first) as conn:
            result = await conn.run("mkdir -p ~/.openclaw && echo x > /dev/null", check=False)
            assert result.exit_status == 2  # redirections are not supported by the fake
            await conn.run("mkdir -p ~/.openclaw/workspace", check=True)
            async with conn.start_sftp_client() as sftp, sftp.open(".openclaw/u.json", "w") as f:
                await f.write('{"user": "old"}')
        home = fake.servers[info.provider_id].ssh.home
        assert (home / ".openclaw/u.json").exists()

        await hetzner.rebuild(info.provider_id)
        second = (await ready.next_call())["host_key"]  # cloud-init ran again
        assert second != first
        assert fake.rebuilt == 1 and list(home.iterdir()) == []
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await ssh(info, fake.ssh_port, first)
        async with await ssh(info, fake.ssh_port, second) as conn:
            result = await conn.run("cat ~/.openclaw/u.json")
            assert result.exit_status == 1 and "No such file" in str(result.stderr)
        assert (await hetzner.get(info.provider_id)) is not None


async def test_rebuild_with_new_user_data(fake: FakeHetzner) -> None:
    hetzner = provider(fake)
    async with ready_endpoint() as ready:
        info = await hetzner.create(name="bc-1", user_data=cloud_config(ready.url), labels={})
        await ready.next_call()
        await hetzner.rebuild(info.provider_id, user_data=cloud_config(ready.url, "rotated"))
        assert (await ready.next_call())["authorization"] == "Bearer rotated"
    with pytest.raises(ProviderError) as caught:
        await hetzner.rebuild(999)
    assert caught.value.code == "not_found"


async def test_retired_and_unknown_server_types_are_refused(fake: FakeHetzner) -> None:
    for name in ("cx22", "CX22"):
        with pytest.raises(ProviderError, match="cx23") as caught:
            provider(fake, server_type=name)
        assert caught.value.code == "invalid_server_type"
    # cx32 is retired too: the server type's per-location deprecation says so, nothing is ordered
    with pytest.raises(ProviderError, match="no longer sells") as retired:
        await provider(fake, server_type="cx32").create(name="bc-1", user_data="", labels={})
    assert not isinstance(retired.value, CapacityError)
    with pytest.raises(ProviderError, match="cx999"):
        await provider(fake, server_type="cx999").create(name="bc-1", user_data="", labels={})
    assert fake.created == 0 and not any(r.startswith("POST") for r in fake.request_log)


async def test_prices_come_from_the_api(fake: FakeHetzner) -> None:
    prices = await provider(fake).prices()
    assert set(prices) == {"fsn1", "nbg1", "hel1"}
    assert (
        prices["fsn1"].monthly_net > 0 and prices["fsn1"].monthly_gross > prices["fsn1"].monthly_net
    )


async def test_a_wrong_token_never_shows_up_in_errors(fake: FakeHetzner) -> None:
    token = "wrong-token-7d1e5c0ffee"
    for endpoint in (f"{fake.base_url}/v1", "http://127.0.0.1:9/v1"):  # refused, and unreachable
        hetzner = HetznerProvider(token, api_endpoint=endpoint, poll_interval=0.01)
        with pytest.raises(ProviderError) as caught:
            await hetzner.list({})
        err = caught.value
        assert err.__cause__ is None and err.__context__ is None
        rendered = "".join(traceback.format_exception(err)) + repr(err) + repr(hetzner)
        assert token not in rendered
    assert caught.value.code is None  # connection refused: no API code
    assert fake.request_log[-1].startswith("GET /v1/servers")


async def test_ready_callback_reports_the_host_key_ssh_presents(fake: FakeHetzner) -> None:
    hetzner = provider(fake)
    async with ready_endpoint() as ready:
        ready.fail_first = 1  # our daemon is not ready yet: cloud-init retries
        info = await hetzner.create(name="bc-1", user_data=cloud_config(ready.url), labels={})
        first, second = await ready.next_call(), await ready.next_call()
        async with asyncio.timeout(10):
            await fake.wait_booted("bc-1")  # the fake has seen our last answer too
        assert first == second
        assert first["authorization"] == f"Bearer {SECRET}"
        assert first["server_name"] == "bc-1"
        assert [c.status for c in fake.ready_calls] == [503, 200]
        host_key = first["host_key"]  # the .pub file's line: type, key, comment
        assert host_key.startswith("ssh-ed25519 AAAA") and host_key.endswith(" root@bc-1")
        async with await ssh(info, fake.ssh_port, host_key) as conn:
            assert (await conn.run("echo pinned", check=True)).stdout == "pinned\n"
        impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await ssh(info, fake.ssh_port, impostor.strip())


async def test_a_silent_server_never_calls_back(fake: FakeHetzner) -> None:
    async with ready_endpoint() as ready:
        fake.silent_names.add("bc-stuck")
        await provider(fake).create(name="bc-stuck", user_data=cloud_config(ready.url), labels={})
        async with asyncio.timeout(10):
            await fake.wait_booted("bc-stuck")
        assert ready.calls.empty() and fake.ready_calls == []


async def test_rate_limit_headers_and_429(fake: FakeHetzner) -> None:
    hetzner = provider(fake)
    assert hetzner.rate_limit is None
    await hetzner.list({})
    seen = hetzner.rate_limit
    assert seen is not None and seen.limit == 3600 and seen.remaining < 3600
    fake.answer_429(1)  # hcloud retries after its back-off (about a second)
    assert await hetzner.list({}) == []
    assert fake.request_log[-2:] == [fake.request_log[-1]] * 2


async def test_waiting_for_an_action_holds_no_slot(fake: FakeHetzner) -> None:
    """A create waits for its action between polls, not in a concurrency slot: with one slot,
    a listing (or fifty other creates) goes on while a slow create waits."""
    fake.action_delay = 3.0
    hetzner = provider(fake, max_concurrency=1, poll_interval=0.05)
    create = asyncio.create_task(hetzner.create(name="bc-slow", user_data="", labels={}))
    async with asyncio.timeout(10):
        for _ in range(1000):  # until its POST is answered: it waits for the action then
            if fake.servers:
                break
            await asyncio.sleep(0.01)
        listed = await hetzner.list({})
        assert [s.name for s in listed] == ["bc-slow"] and not create.done()
        assert (await create).name == "bc-slow"


async def test_the_fakes_spent_budget_is_a_429(tmp_path: Path) -> None:
    """Like Hetzner: every request takes one from the hourly budget; an empty one refuses."""
    async with (
        FakeHetzner(root=tmp_path / "hetzner", rate_limit=3) as fake,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {fake.token}"}) as http,
    ):
        seen = []
        for _ in range(4):
            async with http.get(f"{fake.base_url}/v1/servers") as resp:
                body = await resp.json()
                seen.append((resp.status, resp.headers["RateLimit-Remaining"]))
        assert seen == [(200, "2"), (200, "1"), (200, "0"), (429, "0")]
        assert body["error"]["code"] == "rate_limit_exceeded" and fake.rate_limited == 1


def test_rate_limit_pause_keeps_a_reserve() -> None:
    nearly_spent = RateLimit(limit=3600, remaining=10, reset=0.0, seen=100.0)
    assert nearly_spent.pause(now=100.0, reserve=50) == 40.0  # one request back per second
    assert nearly_spent.pause(now=130.0, reserve=50) == 10.0
    assert nearly_spent.pause(now=200.0, reserve=50) == 0.0
    assert RateLimit(limit=3600, remaining=3000, reset=0.0, seen=0.0).pause(now=0.0) == 0.0


async def test_the_fake_speaks_hcloud_unchanged(fake: FakeHetzner) -> None:
    client = hcloud.Client(fake.token, api_endpoint=f"{fake.base_url}/v1", poll_interval=0.01)

    def exercise() -> None:
        assert {t.name for t in client.server_types.get_all()} >= {"cx23", "cx33", "cx22"}
        assert client.locations.get_by_name("nbg1").city == "Nuremberg"
        assert client.ssh_keys.get_by_name(KEY_NAME).public_key.startswith("ssh-ed25519")
        for name, labels in (("a", {"env": "x", "tier": "1"}), ("b", {"env": "y"}), ("c", {})):
            created = client.servers.create(
                name, ServerType(name="cx33"), Image(name="debian-13"), labels=labels
            )
            created.action.wait_until_finished()
            assert created.root_password is not None  # no SSH keys: Hetzner mails a password
        for selector, names in (
            ("env=x", {"a"}),
            ("env!=x", {"b", "c"}),
            ("env", {"a", "b"}),
            ("!env", {"c"}),
            ("env in (x,y),tier", {"a"}),
            ("env notin (x)", {"b", "c"}),
        ):
            assert {s.name for s in client.servers.get_all(label_selector=selector)} == names
        server = client.servers.get_by_name("a")
        assert server.server_type.cores == 4 and server.image.os_version == "13"
        assert server.public_net.ipv6.network.startswith("2001:db8:")
        assert [a.command for a in server.get_actions()] == ["create_server", "start_server"]
        server.update(labels={"env": "z"})
        assert client.servers.get_by_id(server.id).labels == {"env": "z"}
        try:
            client.servers.get_all(label_selector="env=(")
        except hcloud.APIException as exc:
            assert (
                exc.code == "invalid_input" and exc.details["fields"][0]["name"] == "label_selector"
            )
        else:
            raise AssertionError("an invalid selector must be refused")

    await asyncio.to_thread(exercise)


async def test_logins_and_sudo_follow_the_user_data(fake: FakeHetzner) -> None:
    user_data = (
        "#cloud-config\n"
        "users:\n"
        "  - default\n"
        "  - name: openclaw\n"
        "    shell: /bin/bash\n"
        "    ssh_authorized_keys:\n"
        f'      - "{CLIENT_KEY.export_public_key().decode().strip()}"\n'
        '    sudo: "ALL=(root) NOPASSWD: /usr/bin/systemctl restart openclaw-gateway.service,\n'
        '      /usr/bin/systemctl stop openclaw-gateway.service"\n'
    )
    hetzner = provider(fake, ssh_keys=())  # no project key: root has none
    info = await hetzner.create(name="bc-1", user_data=user_data, labels={})
    host_key = (await asyncio.wait_for(fake.wait_booted("bc-1"), 10)).ssh.host_key_line
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh(info, fake.ssh_port, host_key)
    async with await ssh(info, fake.ssh_port, host_key, username="openclaw") as conn:
        allowed = await conn.run("sudo -n systemctl restart openclaw-gateway.service")
        refused = await conn.run("sudo -n systemctl start openclaw-gateway.service")
        assert (allowed.exit_status, refused.exit_status) == (0, 1)


async def test_two_fakes_share_one_ssh_port_with_their_own_addresses(tmp_path: Path) -> None:
    # The fleet benchmark spreads 10,000 servers over several processes this way.
    claim = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    claim.bind(("127.0.0.1", 0))
    port = claim.getsockname()[1]
    try:
        async with (
            FakeHetzner(root=tmp_path / "a", ssh_port=port) as a,
            FakeHetzner(root=tmp_path / "b", ssh_port=port, first_address=1000) as b,
            ready_endpoint() as ready,
        ):
            infos = []
            for fake in (a, b):
                fake.add_ssh_key(KEY_NAME, CLIENT_KEY.export_public_key().decode())
                infos.append(
                    await provider(fake).create(
                        name="bc-1", user_data=cloud_config(ready.url), labels={}
                    )
                )
            await ready.next_call()
            await ready.next_call()
            assert a.ssh_port == b.ssh_port == port
            assert [i.ipv4 for i in infos] == ["127.0.1.1", "127.0.4.232"]
            for info, fake in zip(infos, (a, b), strict=True):
                key = fake.by_name("bc-1").ssh.host_key_line
                async with await ssh(info, port, key) as conn:
                    assert (await conn.run("echo hi", check=True)).stdout == "hi\n"
    finally:
        claim.close()
