"""Shared plumbing for OpenAI-compatible endpoints (vLLM, SGLang, LMDeploy, hosted APIs).

The API key is read from the environment on every request (never from config, never stored on the
object), sent only to the configured origin, and redacted from every error and log message.
"""
from __future__ import annotations

import base64
import logging
import os
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from g2u_tasks.images import png_bytes

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
# The params OpenAIClient reads; each openai backend accepts these plus its own.
CLIENT_PARAMS = frozenset({"base_url", "api_key_env", "concurrency", "max_retries", "timeout_s", "backoff_s",
                           "backoff_max_s"})
_TRANSPORT_RETRY = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class OpenAIRequestError(RuntimeError):
    """A request that failed for good: names the request index and HTTP status, never the key."""

    def __init__(self, index: int, what: str, status: int | None, detail: str, attempts: int):
        self.index, self.status, self.attempts = index, status, attempts
        status_txt = f"HTTP {status}" if status is not None else "no HTTP status"
        super().__init__(f"request {index} ({what}) failed after {attempts} attempt(s): {status_txt}: {detail}")


def data_url(img) -> str:
    """A PIL image as a base64 PNG data URL (how images go into chat messages): a decoded PNG's own
    bytes where it has them (images.png_bytes), so stored images are not encoded again per request."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class OpenAIClient:
    """Thread-pooled, retrying HTTP client for one OpenAI-compatible base URL."""

    def __init__(self, params: dict[str, Any]):
        if "api_key" in params:
            raise ValueError("params.api_key is not allowed: put the key in an environment variable "
                             "and name it with params.api_key_env (default OPENAI_API_KEY)")
        base_url = params.get("base_url") or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ValueError("openai backend needs params.base_url or the OPENAI_BASE_URL environment variable")
        self.base_url = str(base_url).rstrip("/")
        self.api_key_env = str(params.get("api_key_env", "OPENAI_API_KEY"))
        self.concurrency = int(params.get("concurrency", 8))
        self.max_retries = int(params.get("max_retries", 4))
        self.timeout_s = float(params.get("timeout_s", 120))
        self.backoff_s = float(params.get("backoff_s", 1.0))  # first retry delay; doubles each retry
        self.backoff_max_s = float(params.get("backoff_max_s", 30.0))
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0, timeout_s > 0")
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self._http = httpx.Client(timeout=self.timeout_s, limits=limits, follow_redirects=False)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai")

    def __repr__(self) -> str:
        return (f"OpenAIClient(base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
                f"concurrency={self.concurrency}, max_retries={self.max_retries}, timeout_s={self.timeout_s})")

    # --- key handling -------------------------------------------------------------------------
    def _key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def redact(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "***") if key else text

    def _headers(self, url: str) -> dict[str, str]:
        key = self._key()
        if key and _origin(url) == _origin(self.base_url):
            return {"Authorization": f"Bearer {key}"}
        return {}

    # --- requests -----------------------------------------------------------------------------
    def request(self, method: str, url: str, index: int, **kwargs: Any) -> httpx.Response:
        """One HTTP call to an absolute URL, retried on 408/429/5xx, timeouts and connection errors."""
        what = f"{method} {urlsplit(url).path}"
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            status, retry_after = None, None
            try:
                resp = self._http.request(method, url, headers=self._headers(url), **kwargs)
            except _TRANSPORT_RETRY as exc:
                detail = type(exc).__name__
            else:
                if resp.status_code < 400:
                    return resp
                status, detail = resp.status_code, self.redact(resp.text).strip()[:300]
                retry_after = resp.headers.get("retry-after")
                if status not in RETRY_STATUS:
                    raise OpenAIRequestError(index, what, status, detail, attempt + 1)
            if attempt + 1 == attempts:
                raise OpenAIRequestError(index, what, status, detail, attempts)
            delay = self._delay(attempt, retry_after)
            log.warning("request %d (%s): %s, retry %d/%d in %.2fs", index, what,
                        f"HTTP {status}" if status else detail, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(self.backoff_max_s, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to exponential backoff
        return min(self.backoff_max_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)

    def post_json(self, path: str, body: dict[str, Any], index: int) -> dict[str, Any]:
        resp = self.request("POST", self.base_url + path, index, json=body)
        return self._json(resp, index, path)

    def post_multipart(self, path: str, data: dict[str, str], files: dict[str, Any], index: int) -> dict[str, Any]:
        resp = self.request("POST", self.base_url + path, index, data=data, files=files)
        return self._json(resp, index, path)

    def get_bytes(self, url: str, index: int) -> bytes:
        """GET a result URL (`data:` URLs decoded locally); the key goes only to the base URL's origin."""
        if url.startswith("data:"):
            return base64.b64decode(url.split(",", 1)[1])
        # httpx drops the Authorization header on cross-origin redirects (e.g. to a presigned store URL)
        return self.request("GET", urljoin(self.base_url + "/", url), index, follow_redirects=True).content

    def _json(self, resp: httpx.Response, index: int, path: str) -> dict[str, Any]:
        try:
            return resp.json()
        except ValueError:
            raise OpenAIRequestError(index, f"POST {path}", resp.status_code, "response is not JSON", 1) from None

    # --- batching -----------------------------------------------------------------------------
    def map(self, fn: Callable[[int, T], R], items: list[T]) -> list[R]:
        """`fn(index, item)` for every item on the bounded pool; results in input order.

        On the first failure (in input order) requests not yet started are cancelled, those running
        are waited for (so nothing from this batch is still in flight), then the failure is raised.
        """
        futures: list[Future[R]] = [self._pool.submit(fn, i, item) for i, item in enumerate(items)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            wait(futures)
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
