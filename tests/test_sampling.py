"""Frame sampling: linspace indices, padding mask, official tail cut, 1 fps video candidates."""

from __future__ import annotations

import torch

from datasets.sampling import sample_clip, tail_cut, temporal_mask, uniform_indices, video_candidates


def test_uniform_indices_match_official_linspace():
    # np.linspace(0, n-1, 10, dtype=int) as the RICE dataloaders compute it
    assert uniform_indices(25, 10) == [0, 2, 5, 8, 10, 13, 16, 18, 21, 24]
    assert uniform_indices(10, 10) == list(range(10))
    assert uniform_indices(11, 10) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
    assert uniform_indices(100, 8) == [0, 14, 28, 42, 56, 70, 84, 99]


def test_short_clip_keeps_every_frame_and_pads():
    assert uniform_indices(4, 10) == [0, 1, 2, 3]
    assert uniform_indices(0, 10) == []
    assert temporal_mask(4, 10).tolist() == [True] * 4 + [False] * 6
    assert temporal_mask(12, 10).tolist() == [True] * 10


def test_tail_cut_keeps_a_prefix_with_official_fractions():
    g = torch.Generator().manual_seed(0)
    idx = list(range(0, 100, 10))
    kept = {len(tail_cut(idx, g)) for _ in range(400)}
    # keep = 10 - floor(10 * p), p in {0, .1, ..., .9}: every length 1..10 is reachable
    assert kept == set(range(1, 11))
    for _ in range(50):
        out = tail_cut(idx, g)
        assert out == idx[: len(out)] and len(out) >= 1
    one = [{len(tail_cut([5], g)) for _ in range(50)}]
    assert one == [{1}]


def test_tail_cut_probability_is_one_half():
    g = torch.Generator().manual_seed(1)
    idx = list(range(10))
    uncut = sum(len(tail_cut(idx, g)) == 10 for _ in range(4000))
    # P(uncut) = 1/2 (no cut) + 1/2 * 1/10 (cut fraction 0) = 0.55
    assert abs(uncut / 4000 - 0.55) < 0.03


def test_sample_clip_eval_is_deterministic():
    assert sample_clip(30, 10) == sample_clip(30, 10) == uniform_indices(30, 10)


def test_video_candidates_are_the_frames_ffmpeg_fps_1_writes():
    # RICE extracts MovingFashion frames with `ffmpeg -vf fps=1`; these are libavfilter's picks
    # (measured through PyAV's fps filter): the last frame before k + 0.5 s, round(n / fps) slots
    assert video_candidates(12, 4.0, 1.0) == [1, 5, 9]
    assert video_candidates(39, 25.0, 1.0) == [12, 37]
    assert video_candidates(20, 3.0, 1.0) == [1, 4, 7, 10, 13, 16, 19]
    assert video_candidates(15, 2.0, 1.0) == [0, 2, 4, 6, 8, 10, 12, 14]  # 7.5 s -> 8 slots
    assert video_candidates(90, 29.97, 1.0) == [14, 44, 74]
    assert video_candidates(10, 25.0, None) == list(range(10))
    assert video_candidates(5, 0.5, 1.0) == list(range(5))  # slower than 1 fps: every frame
    assert video_candidates(0, 25.0, 1.0) == []


def test_rice_movingfashion_pick_never_takes_the_last_candidate():
    # prepare_movingfashion.py: np.linspace(0, len(frames), num=10, endpoint=False, dtype=int)
    assert uniform_indices(25, 10, "rice-mf") == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22]
    assert uniform_indices(8, 4, "rice-mf") == [0, 2, 4, 6] and uniform_indices(8, 4) == [0, 2, 4, 7]
    assert uniform_indices(4, 10, "rice-mf") == [0, 1, 2, 3]
    assert sample_clip(8, 4, pick="rice-mf") == [0, 2, 4, 6]
