"""The CLI's way to the API: a thin httpx wrapper that turns failures into clear messages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


class ApiError(Exception):
    """The API refused the request or could not be reached; the message says why."""


def _message(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if isinstance(detail, dict):
        lines = [f"{detail.get('field')}: {detail.get('message')}"]
        lines += [f"  {d}" for d in detail.get("details", [])[:20]]
        return "\n".join(lines)
    if isinstance(detail, list):  # FastAPI's own validation errors
        return "\n".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail)
    return f"HTTP {response.status_code}: {detail}"


class Client:
    def __init__(self, base_url: str, token: str = "", timeout_s: float = 300.0) -> None:
        self.base_url = base_url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ApiError(f"Nightshift is not reachable at {self.base_url} ({exc}); start it "
                           "with 'make run' or set NIGHTSHIFT_API_URL") from exc
        if response.status_code == 401:
            raise ApiError("the API wants a token: set NIGHTSHIFT_API_TOKEN (create one on the API "
                           "tokens page), or run the CLI where the web process keeps data_dir/api-token")
        if response.status_code >= 400:
            raise ApiError(_message(response))
        return response

    def submit_batch(self, path: Path, data: bytes, form: dict[str, Any]) -> dict[str, Any]:
        files = {"file": (path.name, data, "application/jsonl")}
        return self._call("POST", "/api/batches", files=files, data=form).json()

    def add_repository(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/repos", json=body).json()

    def repositories(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/repos").json()

    def submit_todo(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/todos", json=body).json()

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/api/status").json()

    def tasks(self, limit: int = 20) -> list[dict[str, Any]]:
        return self._call("GET", "/api/tasks", params={"limit": limit}).json()

    def task(self, task_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/tasks/{task_id}").json()

    def run_now(self, duration: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/api/run-now", json={"duration": duration}).json()

    @contextmanager
    def stream_lines(self, task_id: int, kind: str) -> Iterator[httpx.Response]:
        try:
            with self.http.stream("GET", f"/api/tasks/{task_id}/{kind}.jsonl") as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(_message(response))
                yield response
        except httpx.ConnectError as exc:
            raise ApiError(f"Nightshift is not reachable at {self.base_url} ({exc})") from exc

    # --- the morning review -------------------------------------------------------------------

    def review(self, night: str | None = None, state: str | None = None, limit: int = 50) -> dict[str, Any]:
        params = {k: v for k, v in {"night": night, "review": state, "limit": limit}.items() if v}
        return self._call("GET", "/api/review", params=params).json()

    def accept(self, task_id: int, into: str) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{task_id}/accept", json={"into": into}).json()

    def reject(self, task_id: int, note: str) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{task_id}/reject", json={"note": note}).json()

    def requeue(self, task_id: int, note: str) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{task_id}/requeue", json={"note": note}).json()

    def patch(self, task_id: int) -> str:
        return self._call("GET", f"/api/tasks/{task_id}/patch.diff").text

    def night_report(self, night: str) -> dict[str, Any]:
        return self._call("GET", f"/api/nights/{night}").json()

    def create_token(self, name: str) -> dict[str, Any]:
        return self._call("POST", "/api/tokens", json={"name": name}).json()
