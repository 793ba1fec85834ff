"""HTTPS with a configured certificate and key."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import httpx
import openai
import pytest


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return crt, key


def test_https_serves_and_plain_http_does_not(serve, cert):
    crt, key = cert
    server = serve(tls_cert=str(crt), tls_key=str(key))
    assert server.base_url.startswith("https://127.0.0.1:")
    trust = ssl.create_default_context(cafile=str(crt))
    assert httpx.get(server.base_url + "/health", verify=trust).json()["status"] == "ok"
    c = openai.OpenAI(base_url=server.base_url + "/v1", api_key="k", http_client=httpx.Client(verify=trust))
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert r.usage.completion_tokens >= 1
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.base_url.replace("https://", "http://") + "/health", timeout=5)
