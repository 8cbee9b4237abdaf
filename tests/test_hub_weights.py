"""Pretrained weights that cannot be had fail in one line, before open_clip or timm is asked.

No test touches the network: the hub is either declared offline (``HF_HUB_OFFLINE=1``), pointed
at a closed local port, or at a local HTTP server; the Hugging Face cache is a temporary folder.
"""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading

import pytest

import methods.hub as hub
from methods.backbones import BackboneConfig, create_backbone
from methods.encoders import PAPER_ENCODER, EncoderLoadError, build_clip

CLIP_REPO = "timm/vit_base_patch32_clip_224.openai"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so no weights a developer downloaded are found."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def no_download(monkeypatch):
    """Records any call that would reach the hub or build a model from it."""
    import open_clip
    import timm

    calls: list[str] = []
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: calls.append(f"open_clip {a} {k}"))
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(f"timm {a} {k}"))
    return calls


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_clip_weights_fail_in_one_line_before_open_clip(empty_cache, no_download, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderLoadError) as err:
        build_clip(PAPER_ENCODER)
    message = str(err.value)
    assert "\n" not in message
    assert "HF_HUB_OFFLINE is set" in message
    assert f"open_clip_model.safetensors or open_clip_pytorch_model.bin of {CLIP_REPO}" in message
    assert "--pretrained PATH" in message
    assert no_download == []


def test_unreachable_hub_fails_in_one_line_without_retries(empty_cache, no_download, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    with pytest.raises(EncoderLoadError, match=f"the hub \\({endpoint}\\) is unreachable") as err:
        build_clip(PAPER_ENCODER)
    assert "\n" not in str(err.value) and no_download == []
    with pytest.raises(EncoderLoadError, match="model.safetensors or pytorch_model.bin of timm/resnet50.tv_in1k"):
        create_backbone(BackboneConfig(name="resnet50", pretrained="tv_in1k"))
    assert no_download == []


def test_a_reachable_hub_or_a_cached_file_lets_the_library_load(empty_cache, monkeypatch):
    from huggingface_hub import constants

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # any HTTP answer means the hub is there
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub.hub_reachable(constants.ENDPOINT)
        hub.require_hub_files(CLIP_REPO, ["open_clip_pytorch_model.bin"], "w", "fix")  # no raise
    finally:
        server.shutdown()
        server.server_close()
    # offline, but the file is in the cache (huggingface_hub's layout): no error, and its path
    snapshot = empty_cache / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"w")
    (empty_cache / "models--timm--vit_base_patch32_clip_224.openai" / "refs").mkdir()
    (empty_cache / "models--timm--vit_base_patch32_clip_224.openai" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    assert hub.cached_file(CLIP_REPO, names) == str(snapshot / "open_clip_pytorch_model.bin")
    hub.require_hub_files(CLIP_REPO, names, "w", "fix")  # no raise


def test_pretrained_naming_a_missing_file_says_so(tmp_path, no_download):
    missing = tmp_path / "ViT-B-32-openai.bin"
    with pytest.raises(EncoderLoadError) as err:
        build_clip(dataclasses.replace(PAPER_ENCODER, pretrained=str(missing)))
    assert str(err.value) == f"encoder weights {missing}: no such file"
    with pytest.raises(EncoderLoadError, match="weights: no such file; open_clip tags of ViT-B-32: openai, "):
        build_clip(dataclasses.replace(PAPER_ENCODER, pretrained="weights"))
    assert no_download == []


def test_offline_flag_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.offline_requested()
    monkeypatch.setenv("HF_HUB_OFFLINE", "True")
    assert hub.offline_requested()
