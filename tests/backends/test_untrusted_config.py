"""A config, a model spec and a family file are untrusted data: they never name code to run, never carry
unread params or credentials, and family templates hold only plain placeholders. Everything here is
refused before any model loads or anything is written."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import yaml

from g2u_tasks.backends import registry
from g2u_tasks.config import ConfigError, ModelSpec, RunConfig, load_config
from g2u_tasks.thoughts.families import PLACEHOLDERS, load_family

REPO = Path(__file__).resolve().parents[2]
CANARY = "c4n4ry9Q7mZx2Lp0Vb8Ns3Kd"  # must never appear in an error, a store or a manifest


def _config(tmp_path: Path, **keys) -> Path:
    """A config file whose store and warehouse live under tmp_path; `keys` override the defaults."""
    body = {"store": f"file://{tmp_path / 'store'}", "warehouse": str(tmp_path / "wh.duckdb"),
            "benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 2}],
            "families": ["detail_enhancement"],
            "understander": {"backend": "transformers", "model": "unused", "params": {"max_new_tokens": 4}}}
    body.update(keys)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _refused(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message, message  # one line
    return message


# ---- 1. no config value names code to import -----------------------------------------------------

def test_a_config_cannot_run_a_command_through_bagel(tmp_path, fresh_models):
    marker = tmp_path / "x"
    hostile = {"backend": "bagel", "model": f"touch {marker}", "params": {"inferencer": "os:system"}}
    msg = _refused(_config(tmp_path, generator=hostile))
    assert "generator backend 'bagel' does not accept param 'inferencer'" in msg
    assert "accepted: " in msg and "max_memory_gib" in msg
    with pytest.raises(ValueError, match="does not accept param 'inferencer'"):
        registry.get_generator(ModelSpec.model_validate(hostile))  # the registry checks on its own too
    assert not marker.exists() and not (tmp_path / "store").exists()


def test_bagel_loads_only_through_its_own_entry_point(tmp_path, fresh_models, monkeypatch):
    """Without the hostile param the model string is only a path: the backend's loader never runs it."""
    marker = tmp_path / "y"
    monkeypatch.setitem(sys.modules, "inferencer", None)  # BAGEL's code is not installed here
    with pytest.raises(ImportError, match=r"`code` param to a checkout of https://github.com/ByteDance-Seed/Bagel"):
        registry.get_generator(ModelSpec(backend="bagel", model=f"touch {marker}"))
    assert not marker.exists()


def test_a_backend_name_is_looked_up_never_imported(fresh_models):
    with pytest.raises(ValueError, match=r"unknown generator backend 'os:system'; known: .*reference"):
        registry.get_generator(ModelSpec(backend="os:system"))
    with pytest.raises(ValueError, match="unknown understander backend 'subprocess'"):
        registry.check_spec("understander", ModelSpec(backend="subprocess"))


def _dynamic_imports(path: Path) -> list[tuple[int, str]]:
    """(line, source) of every importlib.import_module / __import__ / find_spec / exec / eval call."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            builtin = isinstance(fn, ast.Name) and fn.id in {"__import__", "exec", "eval", "compile"}
            loader = isinstance(fn, ast.Attribute) and fn.attr in {"import_module", "__import__", "find_spec",
                                                                    "load_module", "exec_module"}
            if builtin or loader:  # (a model's .eval() is neither)
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_core_imports_no_module_a_value_names():
    """The registry's fixed table and BAGEL's fixed list of official modules (from the checkout its
    `code` param names) are the only dynamic imports in the core; nothing else imports, execs or evals
    a string."""
    found = {str(p.relative_to(REPO)): _dynamic_imports(p) for p in sorted((REPO / "g2u_tasks").rglob("*.py"))}
    found = {k: [src for _, src in v] for k, v in found.items() if v}
    assert found == {"g2u_tasks/backends/registry.py": ["importlib.import_module(BACKEND_MODULES[role][backend])"],
                     "g2u_tasks/backends/unified/bagel_official.py": ["importlib.import_module(name)"]}
    from g2u_tasks.backends.unified import bagel_official
    assert all(isinstance(n, str) for n in bagel_official._MODULES)  # a fixed tuple, not a value from a config


# ---- 2. every backend declares its params; unknown ones and credentials are refused ----------------

# (role, backend, params the backend reads): each accepted, and an unknown key refused, without loading.
DECLARED = [
    ("generator", "reference", {"degrade": {"kind": "blur", "strength": 1}}),
    ("generator", "diffusers", {"dtype": "float32", "num_inference_steps": 2, "call_kwargs": {}}),
    ("generator", "openai", {"base_url": "http://127.0.0.1:1/v1", "api_key_env": "MY_KEY", "size": "64x64"}),
    ("generator", "janus", {"dtype": "float32", "cfg_weight": 5.0, "source_in_context": True}),
    ("generator", "bagel", {"max_memory_gib": 40, "think": False, "generate_kwargs": {"num_timesteps": 5}}),
    ("understander", "transformers", {"max_new_tokens": 4, "batch_size": 2, "dtype": "auto"}),
    ("understander", "openai", {"base_url": "http://127.0.0.1:1/v1", "max_new_tokens": 4, "extra_body": {}}),
    ("understander", "janus", {"max_new_tokens": 4}),
    ("understander", "bagel", {"max_new_tokens": 4, "answer_kwargs": {"do_sample": False}}),
    ("similarity", "transformers", {"device": "cpu", "batch_size": 8}),
]


@pytest.mark.parametrize("role,backend,params", DECLARED, ids=[f"{r}-{b}" for r, b, _ in DECLARED])
def test_each_backend_accepts_its_params_and_refuses_others(role, backend, params):
    spec = ModelSpec(backend=backend, model="m", params=params)
    assert registry.check_spec(role, spec) is spec
    accepted = registry.accepted_params(role, backend)
    assert set(params) <= accepted
    with pytest.raises(ValueError) as err:
        registry.check_spec(role, spec.model_copy(update={"params": {**params, "stepz": 3}}), "somewhere")
    msg = str(err.value)
    assert msg == (f"somewhere: {role} backend {backend!r} does not accept param 'stepz'; "
                   f"accepted: {', '.join(sorted(accepted))}")


def test_checking_a_config_loads_no_model(tmp_path):
    """Checking happens before work: no resident model appears, whatever the backend."""
    registry.clear()
    cfg = load_config(_config(tmp_path, generator={"backend": "diffusers", "model": "m", "params": {"dtype": "fp16"}}))
    assert cfg.generator.backend == "diffusers" and registry.resident_count() == 0


@pytest.mark.parametrize("key,spec,fragment", [
    ("generator", {"backend": "reference", "params": {"steps": 3}},
     "generator backend 'reference' does not accept param 'steps'; accepted: degrade"),
    ("understander", {"backend": "transformers", "model": "m", "params": {"max_tokens": 3}},
     "understander: understander backend 'transformers' does not accept param 'max_tokens'"),
    ("planner", {"backend": "openai", "model": "m", "params": {"base_url": "http://h/v1", "temprature": 0.5}},
     "planner: understander backend 'openai' does not accept param 'temprature'"),
    ("similarity_model", {"backend": "transformers", "model": "clip", "params": {"dtype": "fp16"}},
     "similarity_model: similarity backend 'transformers' does not accept param 'dtype'; accepted: batch_size, device"),
    ("generator", {"backend": "dalle", "params": {}}, "unknown generator backend 'dalle'"),
])
def test_unknown_params_fail_the_config_in_one_line(tmp_path, key, spec, fragment):
    extra = {"prompt_source": "planner"} if key == "planner" else {}
    msg = _refused(_config(tmp_path, **{key: spec}, **extra))
    assert fragment in msg
    assert not (tmp_path / "store").exists()


SECRETS = [  # (where in the config, the spec or judge carrying a canary)
    ("generator", {"backend": "reference", "params": {"api_key": CANARY}}),
    ("generator", {"backend": "openai", "model": "m", "params": {"base_url": "http://h/v1", "token": CANARY}}),
    ("understander", {"backend": "openai", "model": "m",
                      "params": {"base_url": "http://h/v1", "extra_body": {"headers": {"Authorization": f"Bearer {CANARY}"}}}}),
    ("understander", {"backend": "transformers", "model": "m", "params": {"password": CANARY}}),
    ("understander", {"backend": "openai", "model": "m", "params": {"base_url": f"https://user:{CANARY}@h/v1"}}),
    ("planner", {"backend": "openai", "model": "m", "params": {"base_url": "http://h/v1", "api_key_env": f"sk-{CANARY}"}}),
    ("planner", {"backend": "openai", "model": "m", "params": {"base_url": "http://h/v1", "secret": CANARY}}),
    ("similarity_model", {"backend": "transformers", "model": "clip", "params": {"device": f"sk-proj-{CANARY}"}}),
    ("generator", {"backend": "diffusers", "model": "m", "params": {"call_kwargs": {"x": "AKIA" + "ABCDEFGHIJKLMNOP"}}}),
    ("generator", {"backend": "openai", "model": "m", "api_key": CANARY, "params": {"base_url": "http://h/v1"}}),
    ("understander", {"backend": "openai", "model": f"hf_{CANARY}xyz", "params": {"base_url": "http://h/v1"}}),
    ("judge", {"base_url": "http://h/v1", "api_key": CANARY}),
    ("judge", {"base_url": f"http://u:{CANARY}@h/v1"}),
]


@pytest.mark.parametrize("key,spec", SECRETS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(SECRETS)])
def test_credentials_in_a_spec_are_refused_before_anything_is_written(tmp_path, key, spec):
    extra = {"prompt_source": "planner"} if key == "planner" else {}
    msg = _refused(_config(tmp_path, **{key: spec}, **extra))
    assert msg.split(": ")[1] == key and "looks like a credential" in msg and "api_key_env" in msg, msg
    assert CANARY not in msg  # the error itself does not repeat the secret
    assert not (tmp_path / "store").exists() and not (tmp_path / "wh.duckdb").exists()


def test_environment_variable_names_are_fine(tmp_path):
    planner = {"backend": "openai", "model": "m", "params": {"base_url": "http://h/v1", "api_key_env": "G2U_PLANNER_KEY"}}
    cfg = load_config(_config(tmp_path, prompt_source="planner", planner=planner,
                              judge={"base_url": "http://h/v1", "api_key_env": "G2U_JUDGE_KEY"}))
    assert cfg.planner.params["api_key_env"] == "G2U_PLANNER_KEY" and cfg.judge.api_key_env == "G2U_JUDGE_KEY"
    counts = {"max_new_tokens": 4}  # a key that counts tokens is not a token
    assert RunConfig.model_validate({**yaml.safe_load(_config(tmp_path).read_text()),
                                     "understander": {"backend": "transformers", "model": "m", "params": counts}})


def test_a_spec_built_in_code_is_checked_before_materialising(tmp_path, fresh_models):
    """Plain callers skip RunConfig: the stage itself refuses the spec, before any row or blob exists."""
    from g2u_tasks.store.thought_store import ThoughtStore
    from g2u_tasks.thoughts.materialise import plan_thoughts
    from g2u_tasks.thoughts.stage import generate_missing
    from g2u_tasks.benchmarks.loaders import load_benchmark
    from g2u_tasks.thoughts.families import load_families

    cfg = load_config(_config(tmp_path))
    leaky = cfg.generator.model_copy(update={"params": {"api_key": CANARY}})  # model_copy skips validation
    items = load_benchmark("DemoShapes", str(REPO / "data/demo/DemoShapes.tsv"), limit=2)
    planned = plan_thoughts(items, load_families(cfg.families), cfg.model_copy(update={"generator": leaky}))
    store = ThoughtStore(f"file://{tmp_path / 'store'}")
    with pytest.raises(ValueError, match="generator backend 'reference' does not accept param 'api_key'"):
        generate_missing(store, leaky, planned, batch_size=2)
    assert store.version() is None
    assert not any(CANARY in p.read_text(errors="ignore") for p in (tmp_path / "store").rglob("*") if p.is_file())


# ---- 3. family templates hold plain named placeholders only ------------------------------------------

@pytest.mark.parametrize("template,shown", [
    ("Zoom: {question.__class__.__mro__}", "{question.__class__.__mro__}"),
    ("{options[0]}", "{options[0]}"),
    ("{question!r}", "{question!r}"),
    ("{question:>400}", "{question:>400}"),
    ("{question:{options.__class__}}", "{question:{options.__class__}}"),
    ("{}", "{}"),
    ("{0}", "{0}"),
    ("Colour: {colour}", "{colour}"),
])
def test_templates_with_anything_but_plain_placeholders_are_refused_on_load(tmp_path, template, shown):
    (tmp_path / "hostile.yaml").write_text(yaml.safe_dump({"name": "hostile", "template": template}))
    with pytest.raises(ValueError) as err:
        load_family("hostile", tmp_path)
    msg = str(err.value)
    assert f"family file {tmp_path / 'hostile.yaml'}: family hostile: template placeholder {shown} is not allowed" in msg
    assert all("{" + p + "}" in msg for p in PLACEHOLDERS)


@pytest.mark.parametrize("template,why", [
    ("unbalanced {question", "not a valid format string"),
    ("a } alone", "not a valid format string"),
    (["a", "list"], "must be text"),
])
def test_malformed_templates_name_the_family_and_file(tmp_path, template, why):
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({"name": "broken", "template": template}))
    with pytest.raises(ValueError, match=f"family file {tmp_path / 'broken.yaml'}: family broken: template.* {why}"):
        load_family("broken", tmp_path)


def test_plain_placeholders_and_literal_braces_render(tmp_path):
    from g2u_tasks.records import Item

    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(
        {"name": "plain", "template": "{benchmark}/{category}: {question}{options} {{not a field}}"}))
    item = Item(benchmark="B", item_id="1", question="Which?", options={"A": "x"}, answer="A", category="c",
                question_type="mcq", image_sha256="0" * 64, images=(b"x",))
    assert load_family("plain", tmp_path).render(item) == "B/c: Which?\nA. x {not a field}"


@pytest.mark.parametrize("name", ["../secret", "/etc/passwd", "a/b", "x.yaml", ""])
def test_family_names_cannot_point_outside_the_family_folders(tmp_path, name):
    with pytest.raises(ValueError, match="is not a plain name"):
        load_family(name, tmp_path)
