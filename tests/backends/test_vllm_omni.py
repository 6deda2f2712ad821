"""BAGEL behind vLLM-Omni: the `openai` backends against a loopback server (127.0.0.1, ephemeral port)
that speaks vLLM-Omni's documented wire formats and refuses anything else:

- img2img for BAGEL through `POST /v1/chat/completions`: one user message, the text part first
  (`<|im_start|>PROMPT<|im_end|>`), then the source as an `image_url` data URL; `modalities:
  ["image"]`; height, width, seed, num_inference_steps at the top level; the image comes back as
  an `image_url` part of a choice's message content (here in the second choice, after a text one).
- img2text for BAGEL through the same endpoint: the text part first, in BAGEL's chat tokens with
  one `<|image_pad|>` line per image, then the images; `modalities: ["text"]`.
- the Image Edit API, `POST /v1/images/edits`, multipart: `image` file(s), `prompt`, `model` (must
  be the served name), `size` ("auto" = the input's size), only `b64_json` responses, vLLM-Omni's
  extensions (seed, num_inference_steps, guidance_scale, negative_prompt) as form fields.

The thoughts and answers go through the real stage functions (no Prefect) into a store on disk.
"""
from __future__ import annotations

import base64
import email
import email.policy
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import yaml
from PIL import Image

from g2u_tasks.backends.generators import GenerateRequest
from g2u_tasks.backends.generators.openai_backend import OpenAIGenerator
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.images import decode
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.thoughts.families import EditFamily
from g2u_tasks.thoughts.stage import materialise_thoughts
from g2u_tasks.understanding.stage import run_understanding
from g2u_tasks.warehouse.stage import load_run

REPO = Path(__file__).resolve().parents[2]
SERVED = "ByteDance-Seed/BAGEL-7B-MoT"
EDIT_TEXT = re.compile(r"^<\|im_start\|>(?P<prompt>.+)<\|im_end\|>$", re.S)
UND_TEXT = re.compile(r"^<\|im_start\|>user\n(?P<pads>(?:<\|image_pad\|>\n)*)(?P<prompt>.+)<\|im_end\|>\n"
                      r"<\|im_start\|>assistant\n$", re.S)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _edited(src: Image.Image, w: int, h: int) -> Image.Image:
    """What the fake model 'edits': the inverted source at the requested size."""
    return Image.fromarray(255 - np.asarray(src.convert("RGB"))).resize((w, h))


def _from_data_url(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,"), url[:40]
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


class OmniServer:
    """vLLM-Omni serving one model; every request it accepted is kept (`edits`, `answers`, `forms`)."""

    def __init__(self):
        self.edits: list[dict] = []
        self.answers: list[dict] = []
        self.forms: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    if self.path == "/v1/chat/completions":
                        status, out = owner.chat(json.loads(body))
                    elif self.path == "/v1/images/edits":
                        status, out = owner.image_edit(self.headers["Content-Type"], body)
                    else:
                        status, out = 404, {"detail": "Not Found"}
                except AssertionError as exc:  # a request outside the documented format
                    status, out = 422, {"detail": f"not the documented format: {exc}"}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def chat(self, body: dict) -> tuple[int, dict]:
        assert body.get("model") in (None, SERVED), "model mismatch"
        (msg,) = body["messages"]
        assert msg["role"] == "user"
        text, *images = msg["content"]
        assert text["type"] == "text" and all(p["type"] == "image_url" for p in images), "text part first"
        pixels = [_from_data_url(p["image_url"]["url"]) for p in images]
        if body["modalities"] == ["image"]:  # img2img
            m = EDIT_TEXT.match(text["text"])
            assert m and len(pixels) == 1, "img2img: <|im_start|>PROMPT<|im_end|> and one image"
            w, h = body["width"], body["height"]
            self.edits.append({"prompt": m["prompt"], "source": pixels[0], "seed": body.get("seed"),
                               "steps": body.get("num_inference_steps")})
            url = "data:image/png;base64," + base64.b64encode(_png(_edited(pixels[0], w, h))).decode()
            return 200, {"object": "chat.completion", "model": SERVED, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": ""}},
                {"index": 1, "message": {"role": "assistant", "content": [
                    {"type": "image_url", "image_url": {"url": url}}]}}]}
        assert body["modalities"] == ["text"], "modalities"
        m = UND_TEXT.match(text["text"])
        assert m and m["pads"].count("<|image_pad|>") == len(pixels), "one <|image_pad|> per image"
        self.answers.append({"prompt": m["prompt"], "images": pixels})
        sizes = ",".join(f"{im.width}x{im.height}" for im in pixels)
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"A {sizes}"}}]}

    def image_edit(self, ctype: str, body: bytes) -> tuple[int, dict]:
        msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body,
                                       policy=email.policy.HTTP)
        parts = [(p.get_param("name", header="content-disposition"), p.get_payload(decode=True))
                 for p in msg.iter_parts()]
        images = [Image.open(io.BytesIO(v)).convert("RGB") for k, v in parts if k in ("image", "image[]")]
        form = {k: v.decode() for k, v in parts if k not in ("image", "image[]")}
        if not images:
            return 422, {"detail": "Field 'image' or 'url' is required"}
        if form.get("model", SERVED) != SERVED:
            return 400, {"detail": f"Model mismatch: request specifies '{form['model']}' but server is running "
                                   f"'{SERVED}'."}
        if form.get("response_format", "b64_json") != "b64_json":
            return 400, {"detail": "Only response_format 'b64_json' is supported now."}
        size = form.get("size", "auto")
        w, h = images[0].size if size == "auto" else map(int, size.split("x"))
        self.forms.append({**form, "source": images[0]})
        b64 = base64.b64encode(_png(_edited(images[0], w, h))).decode()
        return 200, {"created": 1, "data": [{"b64_json": b64, "url": None, "revised_prompt": None}],
                     "output_format": "png", "size": f"{w}x{h}"}


@pytest.fixture
def omni():
    server = OmniServer()
    yield server
    server.close()


def _example_config(tmp_path, base_url: str, **overrides) -> RunConfig:
    """configs/examples/bagel_vllm_omni.yaml pointed at the loopback server and a tmp store."""
    raw = yaml.safe_load((REPO / "configs/examples/bagel_vllm_omni.yaml").read_text())
    for role in ("generator", "understander"):
        raw[role]["params"].update(base_url=base_url, timeout_s=10, backoff_s=0.01, max_retries=0)
    raw.update(store=f"file://{tmp_path}/store", warehouse=str(tmp_path / "wh.duckdb"),
               benchmarks=[{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 2}],
               families=["detail_enhancement", "identity"], seeds=[3], batch_size=4, **overrides)
    return RunConfig.model_validate(raw)


def test_bagel_through_vllm_omni_chat_round_trip_into_the_store(tmp_path, omni, fresh_models):
    cfg = _example_config(tmp_path, omni.base_url)
    out = materialise_thoughts(cfg)
    assert (out["generated"], out["failed"]) == (4, 0)  # 2 items x 2 families (identity: no request)
    store = ThoughtStore(cfg.store)
    rows = store.manifest(out["dataset_version"]).sort("item_id", "family")

    # requests carried each source image and its rendered edit prompt
    assert len(omni.edits) == 2 and {e["seed"] for e in omni.edits} == {3}
    for row in rows.filter(family="detail_enhancement").iter_rows(named=True):
        (sent,) = [e for e in omni.edits if e["prompt"] == row["prompt"]]
        src = decode(next(it for it in _items(cfg) if it.item_id == row["item_id"]).images[-1]).convert("RGB")
        assert np.array_equal(np.asarray(sent["source"]), np.asarray(src))
        thought = decode(store.read_blob(row["blob_uri"]))
        assert thought.size == src.size  # size "auto": the source's own
        assert np.array_equal(np.asarray(thought.convert("RGB")), 255 - np.asarray(src))
        assert row["conditioning"] == "source_pixels" and row["status"] == "ok"
    assert rows.filter(family="identity")["conditioning"].to_list() == ["none", "none"]

    run_id = run_understanding(cfg, out["dataset_version"], out)
    preds = pl.concat(store.iter_run_parts(run_id, "predictions"))  # written batch by batch
    assert preds.height == 2 + 2 * 2 * 2  # baseline + 2 families x (concat, replace), 2 items
    counts = {(r["condition"], r["mode"]): r["raw_output"].count("x") for r in preds.iter_rows(named=True)}
    assert counts[("baseline", "baseline")] == 1 and counts[("detail_enhancement", "concat")] == 2
    assert counts[("detail_enhancement", "replace")] == 1
    assert all(r.startswith("A ") for r in preds["raw_output"])
    # every answer request carried the question and as many images as the mode says
    assert len(omni.answers) == preds.height
    assert sorted(len(a["images"]) for a in omni.answers) == [1] * 6 + [2] * 4

    # validated and loaded: the warehouse's thoughts say what each thought conditioned on
    load_run(cfg, run_id, out["dataset_version"])
    con = duckdb.connect(cfg.warehouse, read_only=True)
    try:
        got = con.execute("SELECT family, conditioning, count(*) FROM thoughts GROUP BY ALL ORDER BY 1").fetchall()
    finally:
        con.close()
    assert got == [("detail_enhancement", "source_pixels", 2), ("identity", "none", 2)]


def _items(cfg):
    from g2u_tasks.jobs import load_items

    return load_items(cfg)


def test_vllm_omni_image_edit_api(omni):
    params = {"base_url": omni.base_url, "api": "images", "size": "auto", "send_seed": True,
              "num_inference_steps": 25, "guidance_scale": 4.0, "negative_prompt": "blurry", "backoff_s": 0.01}
    gen = OpenAIGenerator(ModelSpec(backend="openai", model=SERVED, params=params))
    fam = EditFamily(name="detail_enhancement", description="", template="{question}")
    srcs = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (6 + i, 9, 3), dtype=np.uint8)) for i in range(2)]
    outs = gen.generate([GenerateRequest(s, f"zoom {i}", seed=7 + i, family=fam) for i, s in enumerate(srcs)])
    for src, out in zip(srcs, outs):
        assert np.array_equal(np.asarray(out), 255 - np.asarray(src))
    forms = sorted(omni.forms, key=lambda f: f["prompt"])
    assert [(f["prompt"], f["seed"], f["model"], f["size"], f["num_inference_steps"], f["guidance_scale"],
             f["negative_prompt"]) for f in forms] == [
        (f"zoom {i}", str(7 + i), SERVED, "auto", "25", "4.0", "blurry") for i in range(2)]
    assert all(np.array_equal(np.asarray(f["source"]), np.asarray(s)) for f, s in zip(forms, srcs))
    # the server's documented refusals surface as one-line errors naming the status
    wrong = OpenAIGenerator(ModelSpec(backend="openai", model="other", params={**params, "max_retries": 0}))
    with pytest.raises(Exception, match=r"HTTP 400.*Model mismatch"):
        wrong.generate([GenerateRequest(srcs[0], "p", seed=0, family=fam)])


def test_explicit_size_and_refused_params(omni):
    params = {"base_url": omni.base_url, "api": "vllm-omni-bagel", "size": "8x4"}
    gen = OpenAIGenerator(ModelSpec(backend="openai", model=SERVED, params=params))
    fam = EditFamily(name="detail_enhancement", description="", template="{question}")
    (out,) = gen.generate([GenerateRequest(Image.new("RGB", (5, 5)), "p", seed=0, family=fam)])
    assert out.size == (8, 4) and omni.edits[0]["seed"] is None  # no seed unless send_seed
    for bad in ({"api": "nope"}, {"api": "vllm-omni-bagel", "extra_form": {}},
                {"api": "images", "extra_body": {}}, {"api": "chat", "size": "big"}):
        with pytest.raises(ValueError, match="openai generator"):
            OpenAIGenerator(ModelSpec(backend="openai", model=SERVED, params={"base_url": omni.base_url, **bad}))


def test_every_generator_backend_declares_its_conditioning():
    from g2u_tasks.backends import registry
    from g2u_tasks.backends.generators.diffusers_backend import DiffusersGenerator
    from g2u_tasks.backends.generators.reference import ReferenceGenerator
    from g2u_tasks.backends.unified.bagel import BagelBackend
    from g2u_tasks.backends.unified.janus import JanusBackend
    from g2u_tasks.records import CONDITIONINGS

    classes = {"reference": ReferenceGenerator, "diffusers": DiffusersGenerator, "openai": OpenAIGenerator,
               "bagel": BagelBackend, "janus": JanusBackend}
    assert set(classes) == set(registry.BACKEND_MODULES["generator"])  # a new backend must declare one too
    assert {b: c.conditioning for b, c in classes.items()} == {
        "reference": "source_pixels", "diffusers": "source_pixels", "openai": "source_pixels",
        "bagel": "source_pixels", "janus": "text_only"}  # Janus-Pro never conditions on the source pixels
    assert set(CONDITIONINGS) >= {c.conditioning for c in classes.values()}
