"""Shared plumbing for OpenAI-compatible endpoints (vLLM, SGLang, LMDeploy, hosted APIs).

The API key is read from the environment on every request (never from config, never stored on the
object), sent only to the configured origin, and redacted from every error and log message.

Transport: one urllib3 pool manager (keep-alive connections, at most `concurrency` per origin); a
request costs about half the CPU of httpx, which counts at nine requests per item sweep.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, TypeVar
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import ProtocolError, SSLError
from urllib3.exceptions import TimeoutError as TransportTimeout

from g2u_tasks.images import png_bytes

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
# The params OpenAIClient reads; each openai backend accepts these plus its own.
CLIENT_PARAMS = frozenset({"base_url", "api_key_env", "concurrency", "max_retries", "timeout_s", "backoff_s",
                           "backoff_max_s"})
# Timeouts (connect and read), refused or dropped connections, TLS failures, broken responses.
_TRANSPORT_RETRY = (TransportTimeout, ProtocolError, SSLError)
MAX_REDIRECTS = 20  # GETs of result URLs only; POSTs never follow redirects


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
        self._http = urllib3.PoolManager(maxsize=self.concurrency, block=True, retries=False,
                                         timeout=urllib3.Timeout(connect=self.timeout_s, read=self.timeout_s))
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
    def request(self, method: str, url: str, index: int, body: bytes | None = None,
                content_type: str | None = None, follow_redirects: bool = False) -> urllib3.BaseHTTPResponse:
        """One HTTP call to an absolute URL, retried on 408/429/5xx, timeouts and connection errors."""
        what = f"{method} {urlsplit(url).path}"
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            status, retry_after = None, None
            try:
                resp = self._send(method, url, body, content_type, follow_redirects)
            except _TRANSPORT_RETRY as exc:
                detail = type(exc).__name__
            else:
                if resp.status < 400:
                    return resp
                status, detail = resp.status, self.redact(resp.data.decode("utf-8", "replace")).strip()[:300]
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

    def _send(self, method: str, url: str, body: bytes | None, content_type: str | None,
              follow_redirects: bool) -> urllib3.BaseHTTPResponse:
        """The response, after following up to MAX_REDIRECTS redirects when asked; every hop gets the
        key only if it goes to the base URL's origin (a presigned store URL never sees it)."""
        for _ in range(MAX_REDIRECTS + 1):
            headers = self._headers(url)
            if content_type:
                headers["Content-Type"] = content_type
            resp = self._http.urlopen(method, url, body=body, headers=headers, redirect=False)
            location = resp.get_redirect_location() if follow_redirects else None
            if not location:
                return resp
            url = urljoin(url, location)
        return resp  # still a redirect: its 3xx is no result

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(self.backoff_max_s, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to exponential backoff
        return min(self.backoff_max_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)

    def post_json(self, path: str, body: dict[str, Any], index: int) -> dict[str, Any]:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        resp = self.request("POST", self.base_url + path, index, data, "application/json")
        return self._json(resp, index, path)

    def post_multipart(self, path: str, data: dict[str, str], files: dict[str, Any], index: int) -> dict[str, Any]:
        """A form of `data` fields and `files` ((filename, bytes, content type) per field)."""
        form, content_type = urllib3.encode_multipart_formdata({**data, **files})
        resp = self.request("POST", self.base_url + path, index, form, content_type)
        return self._json(resp, index, path)

    def get_bytes(self, url: str, index: int) -> bytes:
        """GET a result URL (`data:` URLs decoded locally); the key goes only to the base URL's origin."""
        if url.startswith("data:"):
            return base64.b64decode(url.split(",", 1)[1])
        return self.request("GET", urljoin(self.base_url + "/", url), index, follow_redirects=True).data

    def _json(self, resp: urllib3.BaseHTTPResponse, index: int, path: str) -> dict[str, Any]:
        try:
            return json.loads(resp.data)
        except ValueError:
            raise OpenAIRequestError(index, f"POST {path}", resp.status, "response is not JSON", 1) from None

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
        self._http.clear()
