"""Swagger UI at /docs works offline: the page references only this service's own URLs (no CDN), and
every asset it references is served."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def test_docs_page_loads_only_local_assets(idle_client: TestClient) -> None:
    page = idle_client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    refs += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)  # the OpenAPI document Swagger UI loads
    assert len(refs) >= 4, refs  # script, stylesheet, favicon, openapi.json
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), f"{ref} is not served by this service"
        res = idle_client.get(ref)
        assert res.status_code == 200, (ref, res.status_code)
        assert res.content, ref
    assert any(r.endswith(".js") for r in refs) and any(r.endswith(".css") for r in refs)


def test_no_documentation_page_needs_a_cdn(idle_client: TestClient) -> None:
    """ReDoc ships no local assets (its script comes from a CDN), so it is not served at all."""
    assert idle_client.get("/redoc").status_code == 404
