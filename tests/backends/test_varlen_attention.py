"""The SDPA varlen attention BAGEL's official code gets where flash-attn is missing: flash-attn's contract."""
import importlib.util
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from g2u_tasks.backends.unified.bagel_official import code_revision, import_official
from g2u_tasks.backends.unified.varlen_attention import (
    NAME, flash_attn_varlen_func, padded_attention, provide_flash_attn,
)


def _reference(q, k, v, lens_q, lens_k, causal):
    """Each sequence on its own: explicit softmax(QK^T)V, causal mask aligned bottom-right, GQA by repeat."""
    out, oq, ok = [], 0, 0
    rep = q.shape[1] // k.shape[1]
    for lq, lk in zip(lens_q, lens_k):
        qs, ks, vs = q[oq:oq + lq], k[ok:ok + lk].repeat_interleave(rep, 1), v[ok:ok + lk].repeat_interleave(rep, 1)
        scores = torch.einsum("qhd,khd->hqk", qs, ks) / qs.shape[-1] ** 0.5
        if causal:
            allowed = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
            scores = scores.masked_fill(~allowed, float("-inf"))
        out.append(torch.einsum("hqk,khd->qhd", F.softmax(scores, -1), vs))
        oq, ok = oq + lq, ok + lk
    return torch.cat(out)


def _cu(lens):
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)


def _padded_call(q, k, v, cu_q, cu_k, max_q, max_k, causal=False):
    return padded_attention(q, k, v, cu_q.long(), cu_k.long(), max_q, max_k, None, causal)


@pytest.mark.parametrize("impl", [flash_attn_varlen_func, _padded_call], ids=["cpu-by-shape", "gpu-padded"])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_per_sequence_attention(causal, impl):
    torch.manual_seed(0)
    # prefill, one decode step, square, a query after a context, and a second sequence of the first's shape
    lens_q, lens_k = [3, 1, 7, 5, 3], [9, 1, 7, 12, 9]
    q = torch.randn(sum(lens_q), 4, 8)
    k, v = torch.randn(sum(lens_k), 2, 8), torch.randn(sum(lens_k), 2, 8)
    got = impl(q, k, v, _cu(lens_q), _cu(lens_k), max(lens_q), max(lens_k), causal=causal)
    assert got.shape == q.shape
    torch.testing.assert_close(got, _reference(q, k, v, lens_q, lens_k, causal), rtol=1e-5, atol=1e-5)


def test_on_cpu_a_packed_sequence_gets_exactly_its_own_result():
    """What lets the batched BAGEL path reproduce the one-at-a-time one bit for bit on CPU (padding does not)."""
    torch.manual_seed(0)
    lens_q, lens_k = [1, 1, 20, 20], [300, 2500, 700, 700]
    q = torch.randn(sum(lens_q), 4, 16)
    k, v = torch.randn(sum(lens_k), 2, 16), torch.randn(sum(lens_k), 2, 16)
    packed = flash_attn_varlen_func(q, k, v, _cu(lens_q), _cu(lens_k), max(lens_q), max(lens_k), causal=True)
    oq = ok = 0
    for lq, lk in zip(lens_q, lens_k):
        alone = flash_attn_varlen_func(q[oq:oq + lq], k[ok:ok + lk], v[ok:ok + lk], _cu([lq]), _cu([lk]), lq, lk,
                                       causal=True)
        assert torch.equal(alone, packed[oq:oq + lq])
        oq, ok = oq + lq, ok + lk


def test_stand_in_module_lives_only_inside_the_block():
    with provide_flash_attn(use_sdpa=True) as impl:
        from flash_attn import flash_attn_varlen_func as f
        assert impl == NAME and f is flash_attn_varlen_func
    assert "flash_attn" not in sys.modules or sys.modules["flash_attn"].__spec__.origin is not None
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(ImportError):
            import flash_attn  # noqa: F401


def test_import_official_refuses_what_is_not_a_checkout(tmp_path):
    (tmp_path / "inferencer.py").write_text("raise SystemExit('must not run')\n")
    with pytest.raises(ImportError, match="not a BAGEL checkout"):
        import_official(str(tmp_path))
    with pytest.raises(ValueError, match="attention must be one of"):
        import_official(str(tmp_path), attention="xformers")


def test_code_revision_names_the_commit_and_local_changes(tmp_path):
    assert code_revision(str(tmp_path)) is None
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "inferencer.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert code_revision(str(tmp_path)) == head
    (tmp_path / "inferencer.py").write_text("x = 2\n")
    assert code_revision(str(tmp_path)) == head + "+dirty"
