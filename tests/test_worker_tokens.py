"""Text tokenized in the DataLoader's workers (``Method.batch_preparer``, methods/text_tokens.py).

The ids the workers put in a batch are the tower's tokenizer's own (checked against
``cn_clip.clip.tokenize`` and ``open_clip.tokenize`` on hand-written Chinese strings); a
training step and an evaluation pass whose batches came through the loader call no tokenizer
in the main process (it is patched to raise there, and to work in the workers), and give
bit-identical losses, weights and embeddings to the forward that tokenizes for itself.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import cn_clip.clip
import open_clip
import pytest
import torch
from torch.utils.data import Dataset

from benchmark.core.config import TrainConfig
from benchmark.evaluation.evaluate import extract
from benchmark.training import engine
from benchmark.training.distributed import DistEnv
from methods.rice import Rice
from methods.text_tokens import TextTokens
from tests.rice_fixtures import one_thread, small_rice, toy_batch  # noqa: F401 (fixture)
from tests.test_sgmn import small_sgmn

ASR = ["主播正在介绍这款连衣裙的面料", "", "   ", "纯棉T恤，尺码S到XL都有", "今天直播间福利多多" * 8]
TITLES = ["女装夏季新款碎花连衣裙", "男士休闲裤", "", "儿童运动鞋透气", "真丝围巾"]
CN_CLS, CN_SEP = 101, 102  # Chinese BERT's [CLS] and [SEP]


def test_worker_ids_are_the_cn_clip_tokenizers_on_chinese_text() -> None:
    batch = TextTokens("cn-clip", 24, present=True)({"asr": list(ASR), "title": list(TITLES)})
    assert torch.equal(batch["asr_tokens"], cn_clip.clip.tokenize(ASR, context_length=24))
    assert torch.equal(batch["title_tokens"], cn_clip.clip.tokenize(TITLES, context_length=24))
    vocab = cn_clip.clip._tokenizer.vocab
    first = [CN_CLS] + [vocab[c] for c in ASR[0]] + [CN_SEP]  # one word piece per Chinese character
    assert batch["asr_tokens"][0].tolist() == first + [0] * (24 - len(first))
    assert batch["asr_tokens"][1].tolist() == [CN_CLS, CN_SEP] + [0] * 22
    assert batch["asr_tokens"][4, -1].item() == CN_SEP and (batch["asr_tokens"][4] != 0).all()  # cut, [SEP] kept
    assert batch["asr_present"].tolist() == [True, False, False, True, True]
    assert batch["title_present"].tolist() == [True, True, False, True, True]


def test_worker_ids_are_open_clips_for_the_openai_tower_and_none_for_files() -> None:
    batch = TextTokens("openai-clip", 77)({"asr": list(ASR)})
    assert torch.equal(batch["asr_tokens"], open_clip.tokenize(ASR))
    assert "asr_present" not in batch and "title_tokens" not in batch
    files = TextTokens("file", 52, present=True)({"asr": list(ASR), "clip_id": ["a"] * 5})
    assert set(files) == {"asr", "clip_id", "asr_present"}  # embeddings are read by id: nothing to tokenize


def test_the_methods_preparers_follow_their_text_tower_settings() -> None:
    rice = small_rice()
    prep = rice.batch_preparer()
    enc = rice.cfg.encoder
    assert (prep.tower, prep.context_length, prep.present) == ("cn-clip", enc.text_context_length, True)
    assert small_rice(**{"encoder.text_tower": "openai-clip"}).batch_preparer().context_length == enc.context_length
    assert small_rice(text=False).batch_preparer() is None
    assert small_sgmn().batch_preparer().tower == "cn-clip" and small_sgmn(text=False).batch_preparer() is None


class Items(Dataset):
    """The items of :func:`toy_batch` one by one, with Chinese text, as a dataset yields them."""

    def __init__(self, n: int, sides: tuple[str, ...] = ()) -> None:
        batch = toy_batch(n, 3, seed=5)
        batch["asr"] = [ASR[i % len(ASR)] for i in range(n)]
        batch["title"] = [TITLES[i % len(TITLES)] for i in range(n)]
        keys = sides or tuple(batch)
        self.items = [{k: batch[k][i] for k in keys} for i in range(n)]
        for i, item in enumerate(self.items):
            item["index"] = i

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.items[i])


CFG = TrainConfig(epochs=1, batch_size=4, lr_encoder=1e-3, lr_new=1e-3, weight_decay=0.0, grad_clip=0.0, amp=False)


def _train(tmp, workers: int) -> tuple[Rice, list[dict]]:
    torch.manual_seed(0)
    model = small_rice()
    res = engine.train(
        model,
        Items(8),
        dataclasses.replace(CFG, max_steps=2),
        env=DistEnv(),
        run_dir=tmp,
        num_workers=workers,
        show_progress=False,
    )
    return model, [{k: v for k, v in h.items() if k.startswith("loss")} for h in res.history]


def test_training_through_the_loader_tokenizes_in_the_workers_with_the_same_losses(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(Rice, "batch_preparer", lambda self: None)  # the forward tokenizes, as before
    ref_model, ref_losses = _train(tmp_path / "ref", 0)
    monkeypatch.undo()
    with pytest.MonkeyPatch.context() as mp:
        real, main = cn_clip.clip.tokenize, os.getpid()
        mp.setattr(cn_clip.clip, "tokenize", lambda *a, **k: _only_in_workers(main, real, *a, **k))
        model, losses = _train(tmp_path / "new", 1)
    assert losses == ref_losses and len(losses) == 1 and losses[0]["loss"] > 0
    ref = ref_model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def _only_in_workers(main: int, real, *args: Any, **kwargs: Any) -> torch.Tensor:
    if os.getpid() == main:
        raise AssertionError("tokenized in the main process")
    return real(*args, **kwargs)


@pytest.mark.parametrize(
    "side, keys", [("query", ("frames", "frame_mask", "boxes", "box_mask", "asr")), ("gallery", ("image", "title"))]
)
def test_evaluation_through_the_loader_tokenizes_in_the_workers_with_the_same_embeddings(
    monkeypatch, side, keys
) -> None:
    torch.manual_seed(0)
    model = small_rice()
    data = Items(6, keys)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Rice, "batch_preparer", lambda self: None)
        ref = extract(model, data, side, env=DistEnv(), batch_size=4, num_workers=0, show_progress=False)
    real, main = cn_clip.clip.tokenize, os.getpid()
    monkeypatch.setattr(cn_clip.clip, "tokenize", lambda *a, **k: _only_in_workers(main, real, *a, **k))
    got = extract(model, data, side, env=DistEnv(), batch_size=4, num_workers=1, show_progress=False)
    assert torch.equal(got.embedding, ref.embedding) and got.embedding.abs().sum() > 0


def test_sgmn_uses_the_worker_ids(monkeypatch) -> None:
    torch.manual_seed(0)
    model = small_sgmn().eval()
    batch = toy_batch(4, 3, seed=1)
    batch["asr"], batch["title"] = ASR[:4], TITLES[:4]
    torch.manual_seed(1)  # SMF draws from the generator
    ref = model.training_losses(dict(batch))
    prepared = model.batch_preparer()(dict(batch))
    monkeypatch.setattr(cn_clip.clip, "tokenize", lambda *a, **k: pytest.fail("tokenized in the forward"))
    torch.manual_seed(1)
    got = model.training_losses(prepared)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
