"""The batched BAGEL path's bookkeeping: the prefix tree that makes requests share contexts, and the packed
index ranges. With model calls: test_tiny_bagel.py (CPU), docs/PERFORMANCE.md (the official code, GPU)."""
import torch
from PIL import Image

from g2u_tasks.backends.unified.bagel_packed import Context, PackedBagel, Segment, image_digest


class Recording(PackedBagel):
    """The tree walk of PackedBagel with `extend` recording each packed forward instead of running one."""

    def __init__(self, pack_size=32):
        self.pack_size, self.calls = pack_size, []

    def extend(self, kind, ctxs, payloads, seeds=None):
        self.calls.append((kind, len(payloads), seeds))
        return [Context(None, None, c.kv_len + 1, c.rope + 1) for c in ctxs]


def _img(colour):
    return Image.new("RGB", (32, 32), colour)


def _vit(img):
    return Segment("vit", image_digest(img), img)


def _text(t):
    return Segment("text", t, t)


def test_answers_of_an_item_share_its_original_image_context():
    orig, t1, t2 = _img("red"), _img("blue"), _img("green")
    q = _text("Which colour? A B")
    seqs = [[_vit(orig), q],  # baseline
            [_vit(orig), _vit(t1), q], [_vit(orig), _vit(t2), q],  # concat, two families
            [_vit(t1), q],  # replace
            [_vit(orig), _text("Q edit first"), _vit(t1), _vit(orig), q]]  # conversation
    rec = Recording()
    out = rec.build(seqs)
    assert [c.kv_len for c in out] == [len(s) for s in seqs]
    # depth 0: orig once (shared by 4 requests) + t1 once; depth 1: t1, t2 after orig, q after t1, edit text ...
    assert rec.calls[0] == ("vit", 2, None)
    assert sum(n for kind, n, _ in rec.calls if kind == "vit") == 2 + 2 + 1 + 1  # one-at-a-time: 9
    assert sum(n for kind, n, _ in rec.calls if kind == "text") == 6  # every text follows a different context


def test_edits_share_the_source_context_per_seed_and_pass_seeds_to_the_vae():
    src = _img("red")
    key = lambda seed: (image_digest(src), seed)  # noqa: E731
    heads = {s: [Segment("vae", key(s), src), Segment("vit", key(s), src)] for s in (0, 1)}
    seqs = [[*heads[0], _text("zoom")], [*heads[0], _text("expand")], [*heads[1], _text("zoom")]]
    rec = Recording()
    rec.build(seqs, {key(0): 0, key(1): 1})
    assert rec.calls[0] == ("vae", 2, [0, 1])  # seed 0's source once for both families, seed 1's apart
    assert rec.calls[1][:2] == ("vit", 2) and rec.calls[2][:2] == ("text", 3)


def test_packs_are_split_at_pack_size():
    seqs = [[_text(f"q{i}")] for i in range(5)]
    rec = Recording(pack_size=2)
    rec.build(seqs)
    assert [n for _, n, _ in rec.calls] == [2, 2, 1]


def test_ranges_lay_out_each_sample_after_the_previous_ones():
    # samples of kv length 2 and 3, each followed by one new token: kv rows 0-1 and 3-5
    got = PackedBagel._ranges(torch.tensor([2, 3]), torch.tensor([3, 4]))
    assert got.tolist() == [0, 1, 3, 4, 5]
    # keep only sample 1 of a packed cache whose samples have lengths 3 and 4
    lens = torch.tensor([3, 4])
    got = PackedBagel._ranges(lens[[1]], lens, starts=torch.cumsum(lens, 0) - lens, rows=torch.tensor([1]))
    assert got.tolist() == [3, 4, 5, 6]


def test_vae_packs_hold_one_image_size():
    images = [_img("red"), Image.new("RGB", (48, 32), "red"), _img("blue")]
    seqs = [[Segment("vae", (image_digest(im), 0), im)] for im in images]
    rec = Recording()
    rec.build(seqs, {s[0].key: 0 for s in seqs})
    assert [n for kind, n, _ in rec.calls] == [2, 1]  # the two 32x32 sources share a pack, 48x32 has its own
