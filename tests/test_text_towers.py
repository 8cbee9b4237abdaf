"""Text towers: Chinese-CLIP's BERT (cn-clip), precomputed embedding files, and the OpenAI tower.

Fixtures are hand-written in the style of Kuaishou livestream ASR and Taobao-style titles (not
the synthetic generator's), so the tokenizer is checked on text it did not produce.
"""

from __future__ import annotations

import dataclasses
import json

import open_clip
import pytest
import torch

from methods import text_towers
from methods.encoders import PAPER_ENCODER, TINY_ENCODER, ClipEncoder
from methods.text_towers import CnClipText, FileTextEmbeddings, TextTowerError, cn_clip_config
from tests.rice_fixtures import small_rice, toy_batch

ASR = (
    "家人们看过来，这款白色T恤纯棉的，三号链接，点一下小黄车",
    "宝宝们这个口红颜色超级显白，今天直播间福利价，库存不多了",
    "好的我们来看下一款，黑色双肩包，容量特别大，上班上学都可以背",
)
TITLES = ("2024新款韩版宽松条纹连衣裙女夏季显瘦", "官方旗舰店正品保湿面霜补水滋润")


def tiny_tower(**kw) -> CnClipText:
    torch.manual_seed(0)
    return CnClipText(cn_clip_config("custom", width=32, layers=1, heads=2), embed_dim=16, **kw)


def test_tokenizer_gives_one_token_per_chinese_character() -> None:
    tower = tiny_tower()
    ids = tower.tokenize(ASR[:1])[0]
    from cn_clip.clip import _tokenizer as vocab

    pieces = vocab.convert_ids_to_tokens([int(i) for i in ids if int(i) != 0])
    text = ASR[0]
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    # every character is its own word piece (the ASCII "T" lower-cased), the commas included
    assert pieces[1:-1] == [c.lower() for c in text]
    # OpenAI CLIP's BPE cuts the same sentence into byte pieces: more than twice as many tokens
    assert len(open_clip.SimpleTokenizer().encode(text)) > 2 * len(text)
    # a title's digits are one word piece and its continuation, the rest characters
    title = vocab.convert_ids_to_tokens([int(i) for i in tower.tokenize(TITLES[:1])[0] if int(i) != 0])
    assert title[1:3] == ["202", "##4"] and title[3:5] == ["新", "款"]


def test_tokenizer_truncates_to_the_context_and_keeps_sep() -> None:
    tower = tiny_tower(context_length=12)
    ids = tower.tokenize(["，".join(ASR)])
    assert ids.shape == (1, 12) and int(ids[0, 0]) == 101 and int(ids[0, -1]) == 102
    empty = tower.tokenize([""])[0]
    assert empty[:2].tolist() == [101, 102] and not empty[2:].any()


@torch.no_grad()
def test_cls_embedding_ignores_padding() -> None:
    """[PAD] is masked out of attention: the same text padded to 20 or 40 tokens embeds the same."""
    short, long_ = tiny_tower(context_length=20).eval(), tiny_tower(context_length=40).eval()
    long_.load_state_dict(short.state_dict())
    a, b = short(list(TITLES)), long_(list(TITLES))
    assert a.shape == (2, 16)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[0], a[1])  # different titles, different embeddings


@torch.no_grad()
def test_rbt3_builds_from_cn_clips_config_and_embeds_fixtures() -> None:
    cfg = cn_clip_config("RBT3-chinese")
    torch.manual_seed(0)
    tower = CnClipText(cfg, embed_dim=512).eval()
    assert len(tower.bert.encoder.layer) == 3
    assert tower.bert.embeddings.word_embeddings.weight.shape == (21128, 768)
    out = tower(list(ASR + TITLES))
    assert out.shape == (5, 512) and torch.isfinite(out).all()


def test_roberta_base_config_has_chinese_clip_vit_b16_shapes() -> None:
    """The paper profile's tower, checked by shapes (no forward: too slow for a unit test)."""
    cfg = cn_clip_config("RoBERTa-wwm-ext-base-chinese")
    tower = CnClipText(cfg, embed_dim=512)
    shapes = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    assert shapes["text_projection"] == (768, 512)
    assert shapes["bert.embeddings.word_embeddings.weight"] == (21128, 768)
    assert shapes["bert.embeddings.position_embeddings.weight"] == (512, 768)
    assert shapes["bert.encoder.layer.11.intermediate.dense.weight"] == (3072, 768)
    assert "bert.encoder.layer.12.output.dense.weight" not in shapes
    h, i, v = 768, 3072, 21128
    per_layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h
    assert sum(p.numel() for p in tower.parameters()) == (v + 512 + 2) * h + 2 * h + 12 * per_layer + h * 512


def test_hub_weights_absent_are_one_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(text_towers, "CN_CLIP_DOWNLOAD_ROOT", tmp_path)
    cfg = dataclasses.replace(PAPER_ENCODER, pretrained=None)
    with pytest.raises(TextTowerError, match=r"'ViT-B-16': .*clip_cn_vit-b-16.pt is absent") as err:
        ClipEncoder(cfg, with_text=True)
    assert "\n" not in str(err.value)
    with pytest.raises(TextTowerError, match="text tower is RBT3-chinese"):
        text_towers.hub_weights_path("RN50", "RoBERTa-wwm-ext-base-chinese")


def test_local_cn_clip_checkpoint_loads_its_text_half(tmp_path) -> None:
    source = tiny_tower()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.visual.proj"] = torch.zeros(3, 3)  # the vision half is ignored
    path = tmp_path / "epoch_latest.pt"
    torch.save({"epoch": 3, "state_dict": state}, path)
    torch.manual_seed(1)
    target = CnClipText(cn_clip_config("custom", width=32, layers=1, heads=2), embed_dim=16)
    assert not torch.equal(target.text_projection, source.text_projection)
    target.load(str(path), "custom")
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    del state["module.text_projection"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(TextTowerError, match=r"epoch_latest.pt: missing 1 keys, e.g. \['text_projection'\]"):
        target.load(str(path), "custom")


def _write(path, obj) -> str:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


def test_embedding_files_are_read_by_clip_and_image_id(tmp_path) -> None:
    asr = _write(
        tmp_path / "seg2emb.json", {"live1-100-200": [1.0, 0.0, 0.0, 0.0], "live1-300-400": [0.0, 2.0, 0.0, 0.0]}
    )
    title = _write(tmp_path / "item2emb.json", {"img-a": [0.0, 0.0, 3.0, 0.0]})
    cfg = dataclasses.replace(TINY_ENCODER, embed_dim=4, text_tower="file", asr_embeddings=asr, title_embeddings=title)
    enc = ClipEncoder(cfg, with_text=True)
    out = enc.encode_text(["", ""], ids=["live1-300-400", "live1-100-200"], kind="asr")
    assert out.tolist() == [[0.0, 2.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    assert enc.encode_text(["标题"], ids=["img-a"], kind="title").tolist() == [[0.0, 0.0, 3.0, 0.0]]
    assert not any(True for _ in enc.text_tower.parameters())  # fixed features: nothing to train
    with pytest.raises(TextTowerError, match=r"item2emb.json: no title embedding for id 'img-b'"):
        enc.encode_text(["x"], ids=["img-b"], kind="title")
    with pytest.raises(ValueError, match="no ids for its asr embeddings"):
        enc.encode_text(["x"], kind="asr")


@pytest.mark.parametrize(
    "content, fault",
    [
        ("{not json", "cannot read a JSON object"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"c1": [1.0, 2.0]}), "id 'c1' is not a list of 4 numbers"),
        (json.dumps({"c1": [1.0, "x", 0, 0]}), "id 'c1' is not a list of 4 numbers"),
        (json.dumps({"c1": [1.0, 0, 0, float("nan")]}), "id 'c1' has a non-finite value"),
    ],
)
def test_a_bad_embedding_file_is_one_line_naming_it(tmp_path, content, fault) -> None:
    bad = tmp_path / "seg2emb.json"
    bad.write_text(content, encoding="utf-8")
    good = _write(tmp_path / "item2emb.json", {})
    with pytest.raises(TextTowerError, match=fault) as err:
        FileTextEmbeddings(str(bad), good, embed_dim=4)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_tiny_and_openai_towers_are_both_available() -> None:
    tiny = ClipEncoder(TINY_ENCODER, with_text=True)
    assert isinstance(tiny.text_tower, CnClipText) and not hasattr(tiny, "token_embedding")
    assert tiny.encode_text(list(ASR)).shape == (3, TINY_ENCODER.embed_dim)
    openai = ClipEncoder(dataclasses.replace(TINY_ENCODER, text_tower="openai-clip"), with_text=True)
    assert openai.text_tower is None and openai.encode_text(list(ASR)).shape == (3, TINY_ENCODER.embed_dim)
    with pytest.raises(ValueError, match="text_tower 'bert' is not one of"):
        ClipEncoder(dataclasses.replace(TINY_ENCODER, text_tower="bert"), with_text=True)


@torch.no_grad()
def test_rice_reads_its_text_from_the_embedding_files_by_id(tmp_path) -> None:
    """With ``encoder.text_tower=file`` the batch's ids, not its strings, pick the text."""
    g = torch.Generator().manual_seed(0)
    asr = _write(tmp_path / "seg2emb.json", {f"clip{i}": torch.randn(32, generator=g).tolist() for i in range(4)})
    title = _write(tmp_path / "item2emb.json", {f"img{i}": torch.randn(32, generator=g).tolist() for i in range(4)})
    m = small_rice(
        ipd="none", **{"encoder.text_tower": "file", "encoder.asr_embeddings": asr, "encoder.title_embeddings": title}
    ).eval()
    batch = toy_batch(b=4)
    batch["clip_id"], batch["image_id"] = [f"clip{i}" for i in range(4)], [f"img{i}" for i in range(4)]
    batch["asr"], batch["title"] = ["有字"] * 4, ["标题"] * 4  # non-empty: the text part is on
    q = m.encode_query(batch).embedding
    other_words = dict(batch, asr=["别的话"] * 4)
    torch.testing.assert_close(m.encode_query(other_words).embedding, q)
    swapped = dict(batch, clip_id=["clip1", "clip0", "clip2", "clip3"])
    q2 = m.encode_query(swapped).embedding
    assert not torch.allclose(q2[0], q[0]) and torch.allclose(q2[2], q[2])
    assert m.encode_gallery(batch).embedding.shape[0] == 4
