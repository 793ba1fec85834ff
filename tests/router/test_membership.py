"""The router's worker list follows mDNS and /health: real vllm-router, real multicast on loopback, stub workers."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
from tests.router.conftest import SRC, members, needs_router, status, wait_for

from clawlan.discovery.browser import Discoverer
from clawlan.discovery.service import SERVICE_TYPE
from clawlan.router.browse import ROUTER_ROLE
from clawlan.web.identity import ensure_identity

pytestmark = needs_router


def test_announced_node_joins_and_one_that_leaves_mdns_leaves_the_pool(make_router, announcer, stub_worker, prefix):
    a, b = stub_worker(), stub_worker()
    router = make_router()
    announcer.announce(f"{prefix}-a", a.port)
    announcer.announce(f"{prefix}-b", b.port)
    announcer.announce("someone-else", b.port + 0)  # not matching --match: never taken
    wait_for(lambda: members(router) == {a.url, b.url}, 20, "both stubs in the router's list")
    # b says goodbye while still answering /health: only mDNS can have removed it.
    announcer.withdraw(f"{prefix}-b")
    wait_for(lambda: members(router) == {a.url}, 20, "b to leave after its goodbye")
    assert b.health == 200 and httpx.get(b.url + "/health").status_code == 200


def test_unhealthy_node_waits_and_rejoins_within_10s_of_health_200(make_router, announcer, stub_worker, prefix):
    w = stub_worker()
    w.health = 503  # loading its model
    router = make_router()
    announcer.announce(f"{prefix}-w", w.port)
    wait_for(lambda: router.pool is not None and router.pool.passes >= 3 and router.browser.urls() == {w.url}, 20, "three passes after discovery")
    assert members(router) == set()  # never added while loading
    w.health = 200
    wait_for(lambda: members(router) == {w.url}, 10, "the worker to join within 10 s of /health 200")
    # Dies without a goodbye (the mDNS record stays): /health failures take it out...
    w.health = 503
    wait_for(lambda: members(router) == set(), 20, "the failing worker to leave")
    # ...and the first 200 brings it back.
    w.health = 200
    wait_for(lambda: members(router) == {w.url}, 10, "the worker to rejoin within 10 s of /health 200")


def test_static_worker_and_no_routing_to_routers(make_router, announcer, stub_worker, prefix):
    s, other = stub_worker(), stub_worker()
    router = make_router("--worker", s.url)
    # Another router announcing itself under a matching name must not become a worker.
    announcer.announce(f"{prefix}-other-router", other.port, role=ROUTER_ROLE)
    wait_for(lambda: members(router) == {s.url}, 20, "the static worker")
    wait_for(lambda: router.pool.passes >= 4, 10, "more passes")
    assert members(router) == {s.url}


def test_router_advertises_itself_with_role_router(make_router, prefix):
    router = make_router("--advertise", "--name", f"{prefix}-the-router")
    # A front end browsing the LAN finds it like any back end (same TXT contract).
    d = Discoverer("mDNS", 10_000, "http://10.9.9.9:8080", interfaces=["127.0.0.1"])
    try:
        def found():
            return next((r for r in d.services() if r.name.startswith(f"{prefix}-the-router")), None)

        d.start()
        rec = wait_for(found, 20, "the router's advertisement")
        assert rec.base_url == router.url and router.url != router.process.url  # the front, not vllm-router
        info = d._zc.get_service_info(SERVICE_TYPE, rec.name, timeout=3000)
        assert info is not None and info.properties[b"role"] == ROUTER_ROLE.encode()
        assert not rec.tls and not rec.fingerprint  # on loopback it stays plain unless --tls, as a server does
    finally:
        d.close()


def test_router_on_tls_advertises_its_fingerprint_and_presents_that_key(make_router, prefix, tmp_path):
    from clawlan.discovery.trust import fetch_certificate, fingerprint_of_der

    router = make_router("--advertise", "--tls", "--state-dir", str(tmp_path / "id"), "--name", f"{prefix}-tls-router")
    assert router.identity is not None and router.url.startswith("https://")
    d = Discoverer("mDNS", 10_000, "http://10.9.9.9:8080", interfaces=["127.0.0.1"])
    try:
        d.start()
        rec = wait_for(lambda: next((r for r in d.services() if r.name.startswith(f"{prefix}-tls-router")), None), 20,
                       "the router's advertisement")
        assert rec.tls and rec.fingerprint == router.identity.fingerprint and rec.base_url == router.url
        assert fingerprint_of_der(fetch_certificate("127.0.0.1", router.port)) == router.identity.fingerprint
        # The same identity at the next start (a front end's pin stays valid).
        assert router.identity == ensure_identity(tmp_path / "id", kind="router")
    finally:
        d.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clawlan", "router", *args], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_bad_flags_and_missing_binary_are_one_line_errors():
    for args, says in [
        (["--port", "70000"], "--port 70000"),
        (["--policy", "fastest"], "invalid choice"),
        (["--no-discover"], "--no-discover needs at least one --worker"),
        (["--worker", "10.0.0.5:8080"], "--worker 10.0.0.5:8080"),
        (["--router-binary", "/nonexistent/vllm-router"], "no such executable"),
        (["--sync-interval", "0"], "--sync-interval"),
        (["--tls-cert", "/tmp/c.pem"], "--tls-cert and --tls-key go together"),
        (["--max-body-bytes", "10"], "--max-body-bytes 10"),
        (["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"], "--tls-cert /nonexistent/c.pem"),
    ]:
        p = run_cli(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert says in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, (args, p.stderr)


def test_missing_router_binary_says_how_to_install(monkeypatch, tmp_path):
    import clawlan.router.process as process

    monkeypatch.setattr(process.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    try:
        process.find_binary()
    except process.ConfigError as e:
        assert "pip install 'clawlan[router]'" in str(e)
    else:
        raise AssertionError("no error without a vllm-router binary")


def test_taken_port_is_a_one_line_error(make_router):
    router = make_router()
    p = run_cli("--port", str(router.port))
    assert p.returncode == 2 and "already in use" in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_cli_routes_to_a_static_worker_and_sigterm_stops_its_child(stub_worker):
    from clawlan.router.process import free_port, port_taken

    w = stub_worker()
    port, mport = free_port(), free_port()
    p = subprocess.Popen([sys.executable, "-m", "clawlan", "router", "--no-discover", "--worker", w.url, "--port", str(port),
                          "--metrics-port", str(mport)], env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        def listed() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/list_workers", timeout=2).json()["urls"] == [w.url]
            except httpx.HTTPError:
                return False

        wait_for(listed, 30, "the CLI's router to list the worker")
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        assert not port_taken("127.0.0.1", port)  # the vllm-router child went with it
        assert "routing the OpenAI API at" in p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()


def test_a_killed_clawlan_router_takes_its_vllm_router_along(stub_worker):
    from clawlan.router.process import free_port, port_taken

    w = stub_worker()
    port, inner = free_port(), free_port()  # ours, and vllm-router's own on loopback
    p = subprocess.Popen([sys.executable, "-m", "clawlan", "router", "--no-discover", "--worker", w.url, "--port", str(port),
                          "--router-port", str(inner), "--metrics-port", str(free_port())],
                         env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: status(f"http://127.0.0.1:{port}", "/liveness") == 200, 30, "the router through its front")
        assert status(f"http://127.0.0.1:{inner}", "/liveness") == 200
        p.kill()  # SIGKILL: no chance to stop the child itself
        p.wait(10)
        wait_for(lambda: not port_taken("127.0.0.1", inner), 20, "the orphaned vllm-router to exit")
    finally:
        if p.poll() is None:
            p.kill()


def test_a_bad_txt_record_does_not_stop_the_router_browsing(make_router, announcer, stub_worker, prefix):
    """A LAN host's undecodable TXT (here in ``role``) once ended the router's browser thread; the
    shared browse core (discovery/watch.py) parses it safely and keeps listening."""
    import socket

    from zeroconf import ServiceInfo

    good = stub_worker()
    router = make_router()
    bad = ServiceInfo(SERVICE_TYPE, f"{prefix}-bad.{SERVICE_TYPE}", addresses=[socket.inet_aton("127.0.0.1")], port=9,
                      properties={b"model": b"\xff\xfe", b"role": b"\xff", b"\xc3": b"x"}, server=f"{prefix}-bad.local.")  # fmt: skip
    announcer.zc.register_service(bad)
    try:
        wait_for(lambda: any(r.name.startswith(f"{prefix}-bad") for r in router.browser.nodes()), 20, "the bad record parsed")
        announcer.announce(f"{prefix}-good", good.port)
        wait_for(lambda: members(router) == {good.url}, 20, "the good worker after the bad record")
    finally:
        announcer.zc.unregister_service(bad)
