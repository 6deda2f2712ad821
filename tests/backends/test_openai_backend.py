"""OpenAI-compatible backends against a real local HTTP server (127.0.0.1, ephemeral port)."""
from __future__ import annotations

import base64
import email
import email.policy
import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from g2u_tasks.config import ModelSpec
from g2u_tasks.thoughts.families import EditFamily
from g2u_tasks.backends.generators import GenerateRequest, get_generator
from g2u_tasks.backends.generators.openai_backend import OpenAIGenerator
from g2u_tasks.backends.openai_client import OpenAIRequestError
from g2u_tasks.backends.understanders import UnderstandRequest, get_understander
from g2u_tasks.backends import registry
from g2u_tasks.backends.understanders.openai_backend import OpenAIUnderstander

SECRET = "sk-test-Zq9SECRETkey0123456789"
KEY_ENV = "G2U_TEST_OPENAI_KEY"
HANG_S = 3.0
FAMILY = EditFamily(name="identity", description="", template="{question}")


class _State:
    def __init__(self):
        self.reset()

    def reset(self):
        self.lock = threading.Lock()
        self.release = threading.Event()  # set at teardown to free hung handlers
        self.fail: list[int] = []  # statuses for the next calls, any path
        self.hang = 0  # how many next calls hang past the client timeout
        self.delay_s = 0.0
        self.in_flight = self.max_in_flight = self.calls = 0
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.prompts: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.chat_bodies: list[dict] = []
        self.edit_result = "b64_json"  # or "url_relative", "url_other_origin", "url_redirected"
        self.files: dict[str, bytes] = {}


STATE = _State()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _multipart(ctype: str, body: bytes) -> dict[str, bytes]:
    msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP)
    return {p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in msg.iter_parts()}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._handle(b"")

    def do_POST(self):
        self._handle(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _handle(self, body: bytes):
        st = STATE
        with st.lock:
            st.calls += 1
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            st.seen.append((self.path, self.headers.get("Authorization")))
            fail = st.fail.pop(0) if st.fail else None
            hang = st.hang > 0
            st.hang -= hang
        try:
            if hang:
                st.release.wait(HANG_S)
                self.close_connection = True
                return
            time.sleep(st.delay_s)
            if fail:
                self._send(fail, json.dumps({"error": {"message": "busy"}}).encode())
            elif self.path == "/v1/chat/completions":
                self._chat(json.loads(body))
            elif self.path == "/v1/images/edits":
                self._edit(_multipart(self.headers["Content-Type"], body))
            elif self.path.startswith("/v1/files/"):
                self._send(200, st.files[self.path.rsplit("/", 1)[1]], "image/png")
            elif self.path.startswith("/v1/moved/"):  # a presigned-style redirect to another origin
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{self.server.server_port}/v1/files/"
                                 + self.path.rsplit("/", 1)[1])
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(404, b"{}")
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with st.lock:
                st.in_flight -= 1

    def _chat(self, req: dict):
        content = req["messages"][0]["content"]
        text = content[-1]["text"]
        with STATE.lock:
            STATE.prompts.append(text)
            STATE.chat_bodies.append(req)
        if "BAD" in text:  # a hostile server that echoes the credentials back
            msg = f"invalid request; you sent {self.headers.get('Authorization')}"
            return self._send(400, json.dumps({"error": {"message": msg}}).encode())
        sizes = []
        for part in content[:-1]:
            url = part["image_url"]["url"]
            assert url.startswith("data:image/png;base64,")
            img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            sizes.append(f"{img.width}x{img.height}")
        answer = f"{len(sizes)} {','.join(sizes) or '-'} {text.split()[-1]}"
        self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode())

    def _edit(self, form: dict[str, bytes]):
        src = Image.open(io.BytesIO(form.pop("image"))).convert("RGB")
        fields = {k: v.decode() for k, v in form.items()}
        with STATE.lock:
            STATE.forms.append(fields)
        png = _png(Image.fromarray(255 - np.asarray(src)))
        if STATE.edit_result == "b64_json":
            item = {"b64_json": base64.b64encode(png).decode()}
        else:
            name = f"{len(STATE.files)}-{threading.get_ident()}.png"
            STATE.files[name] = png
            host = "localhost" if STATE.edit_result == "url_other_origin" else ""
            item = {"url": f"http://{host}:{self.server.server_port}/v1/files/{name}" if host else f"/v1/files/{name}"}
            if STATE.edit_result == "url_redirected":
                item = {"url": f"/v1/moved/{name}"}
        self._send(200, json.dumps({"data": [item]}).encode())


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    STATE.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def state(server, monkeypatch):
    STATE.reset()
    monkeypatch.setenv(KEY_ENV, SECRET)
    yield STATE
    STATE.release.set()


def _params(server, **kw):
    return {"base_url": server + "/v1", "api_key_env": KEY_ENV, "backoff_s": 0.01, "timeout_s": 2, **kw}


def _understander(server, **kw) -> OpenAIUnderstander:
    return OpenAIUnderstander(ModelSpec(backend="openai", model="test-vlm", params=_params(server, **kw)))


def _img(w, h, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_batch_answers_in_order_with_image_counts(state, server):
    u = _understander(server, max_new_tokens=5)
    batch = [UnderstandRequest([_img(4 + i, 3, i) for i in range(n)], f"question {n} word{n}") for n in (2, 0, 1, 3)]
    assert u.answer(batch) == ["2 4x3,5x3 word2", "0 - word0", "1 4x3 word1", "3 4x3,5x3,6x3 word3"]
    body = state.chat_bodies[0]
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("test-vlm", 5, 0)
    assert u.name == "openai:test-vlm"


def test_transient_failures_are_retried(state, server, caplog):
    state.fail = [503, 429, 502]
    u = _understander(server, concurrency=1)
    with caplog.at_level(logging.WARNING):
        assert u.answer([UnderstandRequest([], "a b"), UnderstandRequest([], "c d")]) == ["0 - b", "0 - d"]
    assert state.calls == 5
    assert "HTTP 503" in caplog.text and "HTTP 429" in caplog.text


def test_timeout_is_retried(state, server):
    state.hang = 1
    u = _understander(server, timeout_s=0.5)
    t0 = time.monotonic()
    assert u.answer([UnderstandRequest([_img(2, 2)], "x y")]) == ["1 2x2 y"]
    assert state.calls >= 2 and time.monotonic() - t0 < HANG_S


def test_retries_exhausted_raise(state, server):
    state.fail = [503] * 10
    with pytest.raises(OpenAIRequestError, match=r"request 0 .*3 attempt\(s\): HTTP 503") as err:
        _understander(server, max_retries=2).answer([UnderstandRequest([], "p q")])
    assert err.value.status == 503 and state.calls == 3
    state.hang = 10
    with pytest.raises(OpenAIRequestError, match=r"request 0 .*2 attempt\(s\): no HTTP status: ReadTimeout"):
        _understander(server, max_retries=1, timeout_s=0.2).answer([UnderstandRequest([], "p q")])


def test_permanent_400_names_request_and_status_not_key(state, server, caplog):
    u = _understander(server)
    batch = [UnderstandRequest([], "fine one"), UnderstandRequest([], "BAD two"), UnderstandRequest([], "fine three")]
    with caplog.at_level(logging.DEBUG), pytest.raises(OpenAIRequestError) as err:
        u.answer(batch)
    msg = str(err.value)
    assert "request 1" in msg and "HTTP 400" in msg and "***" in msg  # the echoed key is redacted
    assert err.value.status == 400 and err.value.index == 1
    assert state.prompts.count("BAD two") == 1  # a 4xx is not retried
    for text in (msg, repr(err.value), caplog.text, repr(err.value.__cause__), repr(err.value.__context__)):
        assert SECRET not in text


def test_key_from_env_sent_as_bearer_and_never_shown(state, server, caplog, monkeypatch):
    with caplog.at_level(logging.DEBUG):
        u = _understander(server)
        u.answer([UnderstandRequest([], "hello world")])
        g = OpenAIGenerator(ModelSpec(backend="openai", model="edit", params=_params(server)))
    assert state.seen == [("/v1/chat/completions", f"Bearer {SECRET}")]
    for text in (repr(u), u.name, repr(u.client), str(vars(u)), repr(g), g.name, caplog.text):
        assert SECRET not in text
    # no key in the environment: no Authorization header (local servers)
    monkeypatch.delenv(KEY_ENV)
    u.answer([UnderstandRequest([], "hello again")])
    assert state.seen[-1] == ("/v1/chat/completions", None)
    # a key in the config file is refused without echoing it
    with pytest.raises(ValueError, match="api_key_env") as err:
        _understander(server, api_key=SECRET)
    assert SECRET not in str(err.value)


def test_concurrency_bound_respected(state, server):
    state.delay_s = 0.15
    u = _understander(server, concurrency=3)
    out = u.answer([UnderstandRequest([], f"q w{i}") for i in range(9)])
    assert out == [f"0 - w{i}" for i in range(9)]
    assert 2 <= state.max_in_flight <= 3


def test_registered_backends_and_base_url_from_env(state, server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server + "/v1")
    params = {"api_key_env": KEY_ENV, "backoff_s": 0.01}
    registry.clear()
    try:
        u = get_understander(ModelSpec(backend="openai", model="m", params=params))
        assert isinstance(u.backend, OpenAIUnderstander) and u.answer([UnderstandRequest([], "a z")]) == ["0 - z"]
    finally:
        registry.clear()
    assert isinstance(get_generator(ModelSpec(backend="openai", model="m", params=params)).backend, OpenAIGenerator)


@pytest.mark.parametrize("result", ["b64_json", "url_relative", "url_other_origin", "url_redirected"])
def test_image_edit_round_trip(state, server, result):
    state.edit_result = result
    state.fail = [503]  # one transient failure on the way
    spec = ModelSpec(backend="openai", model="edit-model", params=_params(server, send_seed=True, size="auto"))
    gen = OpenAIGenerator(spec)
    srcs = [_img(8, 6, 1), _img(5, 9, 2), _img(12, 4, 3)]
    batch = [GenerateRequest(img, f"edit {i}", seed=10 + i, family=FAMILY) for i, img in enumerate(srcs)]
    outs = gen.generate(batch)
    for src, out in zip(srcs, outs):
        assert out.size == src.size
        assert np.array_equal(np.asarray(out), 255 - np.asarray(src))
    forms = sorted(state.forms, key=lambda f: f["prompt"])
    assert [(f["prompt"], f["seed"], f["model"], f["size"]) for f in forms] == [
        (f"edit {i}", str(10 + i), "edit-model", "auto") for i in range(3)
    ]
    gets = [auth for path, auth in state.seen if path.startswith("/v1/files/")]
    assert len(gets) == (0 if result == "b64_json" else 3)
    # the key goes only to the configured origin, also when a result URL redirects elsewhere
    assert all(a == (f"Bearer {SECRET}" if result == "url_relative" else None) for a in gets)
    moved = [auth for path, auth in state.seen if path.startswith("/v1/moved/")]
    assert moved == ([f"Bearer {SECRET}"] * 3 if result == "url_redirected" else [])
