"""RICE's frame packing and boxed-only detector pass (per-sample encoders: the paper profile).

Packed: only the real frames go through the encoder and are scattered back; boxed-only: the
detector's pass runs only on frames with a box. Both must give what encoding every frame gives.
Tolerance 1e-5 (absolute and relative, float32): the per-frame arithmetic is the same, but a
matrix product over fewer rows may be blocked differently and round differently.
"""

from __future__ import annotations

import pytest
import torch

from tests.rice_fixtures import one_thread, paper_small_rice, small_rice, toy_batch, with_indices  # noqa: F401

TOL = dict(rtol=1e-5, atol=1e-5)


def _padded(m):
    """The same model computing the old way: every frame encoded, the detector on every frame."""
    m._per_sample = False
    return m


def _batch():
    b = toy_batch(b=4, t=3)
    b["box_mask"][2] = False  # a clip with no box at all
    return b


@pytest.mark.parametrize("indices", [True, False])
def test_packed_and_padded_give_the_same_embeddings_and_losses(indices):
    torch.manual_seed(0)
    m = paper_small_rice().eval()  # eval: no dropout, so the two passes can be compared
    assert m._per_sample
    batch = with_indices(_batch()) if indices else _batch()
    q = m.encode_query(batch)
    losses = m.training_losses(batch)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad()
    ref = _padded(m)
    q_ref = ref.encode_query(batch)
    ref_losses = ref.training_losses(batch)
    sum(ref_losses.values()).backward()
    torch.testing.assert_close(q.embedding, q_ref.embedding, **TOL)
    keep = q_ref.extras["pmd_keep"]
    assert torch.equal(q.extras["pmd_keep"], keep)
    torch.testing.assert_close(q.extras["pmd_tokens"][keep], q_ref.extras["pmd_tokens"][keep], **TOL)
    assert losses.keys() == ref_losses.keys()
    for k in losses:
        torch.testing.assert_close(losses[k], ref_losses[k], **TOL)
    ref_grads = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
    assert grads.keys() == ref_grads.keys()
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-4, atol=1e-6)


def test_the_single_frame_detector_sees_only_boxed_frames():
    m = paper_small_rice()
    batch = with_indices(_batch())
    det = []
    m.detector.register_forward_hook(lambda mod, args, out: det.append(tuple(args[0].shape[:2])))
    m.training_losses(batch)
    assert int((batch["box_mask"] & batch["frame_mask"]).sum()) == 7
    assert det == [(7, 1)]  # each boxed frame as a one-frame clip


def test_stem_sees_only_real_and_boxed_frames():
    m = paper_small_rice()
    batch = with_indices(_batch())
    rows = []
    m.encoder.visual.conv1.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    m.training_losses(batch)
    assert sorted(rows) == sorted([11, 7, 4])  # real frames, boxed frames, shop images
    rows.clear()
    _padded(m).training_losses(batch)
    assert sorted(rows) == sorted([12, 12, 4])


def test_multi_frame_detector_runs_on_clips_with_a_box():
    m = paper_small_rice(ipd="multi")
    batch = with_indices(_batch())
    det = []
    m.detector.register_forward_hook(lambda mod, args, out: det.append(tuple(args[0].shape[:2])))
    m.eval()
    got = m.training_losses(batch)
    assert det == [(3, 3)]  # clip 2 has no box
    ref = _padded(m).training_losses(batch)
    for k in got:
        torch.testing.assert_close(got[k], ref[k], **TOL)


@pytest.mark.parametrize("build", [paper_small_rice, small_rice])
def test_every_parameter_gets_a_gradient_without_any_box(build):
    """What lets DDP run without find_unused_parameters (``Rice.every_parameter_used``)."""
    torch.manual_seed(0)
    m = build()
    batch = _batch()
    batch["box_mask"][:] = False
    sum(m.training_losses(with_indices(batch)).values()).backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_tiny_profile_keeps_encoding_every_frame():
    """Its ConvStem has BatchNorm: a packed batch would change the training statistics."""
    m = small_rice()
    assert not m._per_sample
    rows = []
    m.encoder.visual.conv1.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    m.training_losses(with_indices(_batch()))
    assert 12 in rows
