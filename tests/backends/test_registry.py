"""The one backend registry: a resident object per role and spec, one lock per resident model."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from g2u_tasks.backends import registry
from g2u_tasks.backends.generators import GenerateRequest
from g2u_tasks.config import ModelSpec
from g2u_tasks.thoughts.families import load_family


@registry.register("generator", "test-overlap")
class OverlapProbe:
    """Records the most calls that were ever inside `generate` at the same time."""

    def __init__(self, spec: ModelSpec):
        self.name, self.inside, self.most, self._count_lock = "test-overlap", 0, 0, threading.Lock()

    def generate(self, batch):
        with self._count_lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.01)  # releases the GIL: unserialised callers would overlap here
        with self._count_lock:
            self.inside -= 1
        return [r.image for r in batch]


def _req() -> GenerateRequest:
    return GenerateRequest(Image.new("RGB", (8, 8)), "p", 0, load_family("detail_enhancement"))


def test_one_resident_object_per_role_and_spec_until_clear(fresh_models):
    spec = ModelSpec(backend="reference")
    gen = registry.get_generator(spec)
    assert registry.get_generator(spec.model_copy()) is gen and gen.name == "reference"
    assert registry.resident_count("generator") == 1 and registry.resident_count("understander") == 0
    registry.clear()
    assert registry.resident_count() == 0 and registry.get_generator(spec) is not gen


def test_calls_to_one_model_never_overlap_and_are_timed_inside_its_lock(fresh_models):
    gen = registry.get_generator(ModelSpec(backend="test-overlap"))
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: gen.timed("generate", [_req()]), range(16)))
    assert gen.backend.most == 1  # 16 calls from 8 threads, one at a time
    assert all(len(images) == 1 and 0.01 <= seconds < 0.1 for images, seconds in outs)  # never the queue's wait


def test_each_resident_model_has_its_own_lock(fresh_models):
    a = registry.get_generator(ModelSpec(backend="test-overlap", model="a"))
    b = registry.get_generator(ModelSpec(backend="test-overlap", model="b"))
    assert a.backend is not b.backend and a.lock is not b.lock


def test_unknown_backends_and_roles_are_named():
    with pytest.raises(ValueError, match="unknown understander backend 'nope'; known: .*transformers"):
        registry.get_understander(ModelSpec(backend="nope"))
    with pytest.raises(ValueError, match="unknown backend role 'painter'"):
        registry.register("painter", "x")
    assert {"reference", "diffusers", "janus", "bagel", "test-overlap"} <= set(registry.known_backends("generator"))
