"""The docs pages reference only the service's own assets, which it serves, under a policy that allows nothing else."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from online.serving.docs_pages import ASSETS_URL, CONTENT_SECURITY_POLICY, add_docs_pages


def _client() -> TestClient:
    app = FastAPI(title="t", docs_url=None, redoc_url=None)
    add_docs_pages(app)
    return TestClient(app)


def test_pages_load_only_local_assets_that_the_service_serves() -> None:
    with _client() as client:
        for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            response = client.get(page)
            assert response.status_code == 200
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            links = re.findall(r'(?:src|href)="([^"]+)"', response.text)
            assert f"{ASSETS_URL}/{script}" in links
            assert [link for link in links if not link.startswith("/")] == []
            for link in links:
                asset = client.get(link)
                assert asset.status_code == 200, link
                assert len(asset.content) > 1_000, link


def test_policy_names_no_other_origin() -> None:
    sources = {part.split()[0]: part.split()[1:] for part in CONTENT_SECURITY_POLICY.split("; ")}
    assert sources["default-src"] == ["'self'"]
    assert all("http" not in value and "*" not in value for values in sources.values() for value in values)
