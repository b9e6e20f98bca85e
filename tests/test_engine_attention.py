"""The engine's attention against plain references: the CPU decode rows (RowKV: shared prefix,
sample groups, moves) through RowDecodeAttention against the paged reference over each sequence's
whole context, and prefill over cached blocks. The decode ops' own paths are checked in
test_kernels_paged_decode.py."""


import pytest
import torch
import torch.nn.functional as F
from reversalkit.kernels.paged_decode import paged_decode_reference

from reversalkit._ext import native
from reversalkit.engine.attention import KVCache, PrefillAttention, PrefillSeq, context_slots
from reversalkit.engine.rows import RowDecodeAttention, RowKV

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def decode_matches_paged_reference(rows, cache, tables, lens, windows, H, backend, check=None):
    """Each layer's row decode of one new token per sequence against the paged reference over the
    sequences' whole contexts (lens include the new token); check(layer, pos, k) after each."""
    B, L, D = len(lens), len(windows), cache.data.shape[-1]
    bs, Hkv = cache.block_size, cache.data.shape[-2]
    pos = torch.tensor(lens) - 1
    new_slots = torch.stack([context_slots(tables[b].long(), lens[b], bs)[-1] for b in range(B)])
    q = torch.randn(B, H, D)
    for layer in range(L):
        k, v = torch.randn(B, Hkv, D), torch.randn(B, Hkv, D)
        attend = RowDecodeAttention(rows, pos, windows, D ** -0.5, backend=backend)
        out = attend(layer, q, k, v).view(B, H, D)
        cache.store(layer, new_slots, k, v)
        ref = paged_decode_reference(q, cache.data[layer, 0], cache.data[layer, 1], tables,
                                     torch.tensor(lens, dtype=torch.int32), D ** -0.5, windows[layer])
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        if check is not None:
            check(layer, pos, k)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("windows,prefix_len,D", [((None, None), 8, 16), ((None, 5, 12), 8, 16),
                                                  ((None,), 0, 16), ((None, 3), 4, 12)])
def test_row_decode_matches_paged_reference(windows, prefix_len, D, backend):
    """Rows hold positions >= prefix_len; the shared prefix comes from the paged cache once.
    D=16 takes the kernel's AVX2 path, D=12 its scalar one; a window of 3 masks the whole prefix
    for some rows."""
    if backend == "cpp":
        assert native() is not None and hasattr(native(), "row_attention_f32"), "build reversalkit._C"
    torch.manual_seed(0)
    L, Hkv, H, bs = len(windows), 2, 4, 4
    cache = KVCache(L, 40, bs, Hkv, D, device="cpu", dtype=torch.float32)
    cache.data.normal_()
    lens = [prefix_len + t for t in (1, 6, 13)]  # context lengths including the new token
    B = len(lens)
    prefix_blocks = list(range(prefix_len // bs))
    tables = torch.zeros(B, 8, dtype=torch.int32)
    for b in range(B):  # shared prefix blocks, then private ones
        own = list(range(10 + 8 * b, 10 + 8 * b + 8 - len(prefix_blocks)))
        tables[b] = torch.tensor(prefix_blocks + own, dtype=torch.int32)
    rows = RowKV(L, 4, Hkv, D, max_tail=20, dtype=torch.float32)
    rows.set_prefix(cache, context_slots(torch.tensor(prefix_blocks, dtype=torch.int64), prefix_len, bs))
    for b, n in enumerate(lens):  # rows hold every token but the new one
        slots = context_slots(tables[b].long(), n - 1, bs)
        rows.fill(cache, slice(b, b + 1), slots[prefix_len:])
    decode_matches_paged_reference(rows, cache, tables, lens, windows, H, backend)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("windows,prefix_len,D", [((None, None), 8, 16), ((None, 5, 9), 8, 16),
                                                  ((None, 3), 0, 12), ((4,), 4, 16)])
def test_row_decode_with_sample_groups_matches_paged_reference(windows, prefix_len, D, backend):
    """Samples of one prompt share its tokens after the prefix as a group, stored once: rows 0-2
    (group of 6 tokens; own tails of 0, 3 and 9 before the new token), row 3 alone (its prompt in
    its row), rows 4-5 (group of 2). Windows of 3-5 end inside the group or the prefix for some
    rows. Against the paged reference over each row's whole context; the new K/V land at the own
    row's next slot."""
    if backend == "cpp":
        assert native() is not None and hasattr(native(), "row_attention_f32"), "build reversalkit._C"
    torch.manual_seed(2)
    L, Hkv, H, bs = len(windows), 2, 4, 4
    cache = KVCache(L, 80, bs, Hkv, D, device="cpu", dtype=torch.float32)
    prefix = torch.randn(2, L, prefix_len, Hkv, D)  # shared by all rows
    prompts = [torch.randn(2, L, n, Hkv, D) for n in (6, 5, 2)]  # after the prefix
    layout = [(0, 0), (0, 3), (0, 9), (1, 3), (2, 0), (2, 7)]  # (prompt, own tokens) per row
    B = len(layout)
    prefix_blocks = list(range(prefix_len // bs))
    tables = torch.zeros(B, 10, dtype=torch.int32)
    full = []  # each row's context before its new token: (2, L, n, Hkv, D)
    for b, (pi, own) in enumerate(layout):
        tables[b] = torch.tensor(prefix_blocks + list(range(10 + 10 * b, 20 + 10 * b - len(prefix_blocks))),
                                 dtype=torch.int32)
        ctx = torch.cat([prefix, prompts[pi], torch.randn(2, L, own, Hkv, D)], dim=2)
        slots = context_slots(tables[b].long(), ctx.shape[2], bs)
        for layer in range(L):
            cache.store(layer, slots, ctx[0, layer], ctx[1, layer])
        full.append(ctx)
    rows = RowKV(L, 8, Hkv, D, max_tail=24, dtype=torch.float32, group_tail=8)
    rows.set_prefix(cache, context_slots(torch.tensor(prefix_blocks, dtype=torch.int64), prefix_len, bs))
    for r0, r1 in ((0, 3), (3, 4), (4, 6)):  # as admission fills them: one slice per prompt
        n_prompt = prompts[layout[r0][0]].shape[2]
        slots = context_slots(tables[r0].long(), prefix_len + n_prompt, bs)
        rows.fill(cache, slice(r0, r1), slots[prefix_len:])
    for b, (pi, own) in enumerate(layout):  # what each sample decoded so far
        start = prefix_len + prompts[pi].shape[2]
        row_start = start - prefix_len if b == 3 else 0  # a grouped row holds only its own tokens
        rows.k[:, b, :, row_start:row_start + own] = full[b][0, :, start:].transpose(1, 2)
        rows.v[:, b, :, row_start:row_start + own] = full[b][1, :, start:].transpose(1, 2)
    assert rows.group[:6].tolist() == [0, 0, 0, -1, 1, 1] and rows.glen[:6].tolist() == [6, 6, 6, 0, 2, 2]
    lens = [f.shape[2] + 1 for f in full]  # context lengths including the new token

    def stored_in_own_row(layer, pos, k):
        own_index = pos - prefix_len - rows.glen[:B]
        torch.testing.assert_close(rows.k[layer, torch.arange(B), :, own_index], k, rtol=0, atol=0)

    decode_matches_paged_reference(rows, cache, tables, lens, windows, H, backend, stored_in_own_row)


def test_sample_group_moves_and_reuse():
    """A moved row keeps its group and own tokens; a group is reused once no running row holds it."""
    cache = KVCache(1, 8, 4, 1, 8, device="cpu", dtype=torch.float32)
    cache.data.normal_()
    rows = RowKV(1, 4, 1, 8, max_tail=8, dtype=torch.float32, group_tail=4)
    rows.set_prefix(cache, torch.zeros(0, dtype=torch.int64))
    rows.fill(cache, slice(0, 2), torch.arange(3))  # a group of 3 tokens
    rows.fill(cache, slice(2, 4), torch.arange(4, 6))  # a second group
    assert rows.group.tolist() == [0, 0, 1, 1]
    rows.k[0, 3, 0, :2] = torch.tensor([[7.0] * 8, [8.0] * 8])
    rows.k[0, 0, 0, :1] = 5.0
    # row 3 (group of 2 + 2 own tokens) replaces row 0 while row 0 (1 own token) goes to row 2
    rows.move(torch.tensor([3, 0]), torch.tensor([0, 2]), context=torch.tensor([2 + 2, 3 + 1]))
    assert rows.group[:3].tolist() == [1, 0, 0] and rows.glen[:3].tolist() == [2, 3, 3]
    torch.testing.assert_close(rows.k[0, 0, 0, :2], torch.tensor([[7.0] * 8, [8.0] * 8]))
    torch.testing.assert_close(rows.k[0, 2, 0, :1], torch.full((1, 8), 5.0))
    rows.group[2] = -1  # row 2's sequence is done
    rows.fill(cache, slice(1, 3), torch.arange(2))  # row 0 (group 1) runs: group 0 is free again
    assert rows.group[:3].tolist() == [1, 0, 0]
    rows.fill(cache, slice(3, 4), torch.arange(2))  # a lone sample keeps its prompt in its row
    assert rows.group[3] == -1 and rows.glen[3] == 0


def test_prefill_over_cached_prefix_matches_dense():
    """Two sequences: one fully new, one whose first 8 tokens are already in the cache."""
    torch.manual_seed(0)
    Hkv, H, D, bs = 2, 4, 16, 4
    cache = KVCache(1, 16, bs, Hkv, D, device="cpu", dtype=torch.float32)
    lens, cached = [7, 13], [0, 8]
    tables = [torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])]
    full_k = [torch.randn(n, Hkv, D) for n in lens]
    full_v = [torch.randn(n, Hkv, D) for n in lens]
    ctx = [context_slots(t, n, bs) for t, n in zip(tables, lens)]
    cache.store(0, ctx[1][:8], full_k[1][:8], full_v[1][:8])
    metas, start = [], 0
    for n, c, s in zip(lens, cached, ctx):
        metas.append(PrefillSeq(start, n - c, n, s))
        start += n - c
    q_full = [torch.randn(n, H, D) for n in lens]
    q = torch.cat([q_full[0], q_full[1][8:]])
    k = torch.cat([full_k[0], full_k[1][8:]])
    v = torch.cat([full_v[0], full_v[1][8:]])
    slots = torch.cat([ctx[0], ctx[1][8:]])
    for window in (None, 3):
        out = PrefillAttention(cache, metas, slots, (window,), D ** -0.5)(0, q, k, v).view(-1, H, D)
        got = [out[:7], out[7:]]
        for i, (n, c) in enumerate(zip(lens, cached)):
            kk = full_k[i].repeat_interleave(2, 1).transpose(0, 1)
            vv = full_v[i].repeat_interleave(2, 1).transpose(0, 1)
            qpos, kpos = torch.arange(n)[:, None], torch.arange(n)[None, :]
            allowed = (kpos <= qpos) & ((kpos > qpos - window) if window else True)
            ref = F.scaled_dot_product_attention(q_full[i].transpose(0, 1), kk, vv, attn_mask=allowed,
                                                 scale=D ** -0.5).transpose(0, 1)
            torch.testing.assert_close(got[i], ref[c:], rtol=1e-5, atol=1e-5)
