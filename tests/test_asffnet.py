"""Tests of the ASFFNet model: checkpoint layout, shapes, spectral norm, folding, registry."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from albumfix.restore import ASFFNet, ASFFNetConfig, create_model, get_config, list_configs, register_config
from albumfix.restore.asffnet import (
    ASFFBlock,
    ComponentConditioner,
    FeatureExtractor,
    MaskEncoder,
    MSDilate,
    SFFLayer,
    adaptive_instance_norm,
    decoder,
    landmark_mask,
)
from albumfix.restore.layers import SNConv2d, fold_spectral_norm, has_spectral_norm
from conftest import tiny_model_config

KEY_LIST = Path(__file__).resolve().parents[2] / "shared/docs/asffnet512_state_dict.txt"

TINY = tiny_model_config("test-tiny")


def _landmarks(batch: int, size: int, seed: int) -> torch.Tensor:
    """(B, 68, 2) float32 points inside the central part of a size x size crop."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 68, 2, generator=g) * 0.6 + 0.2) * size


def _inputs(config: ASFFNetConfig, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    s = config.size
    lq = torch.rand(batch, 3, s, s, generator=g) * 2 - 1
    ref = torch.rand(batch, 3, s, s, generator=g) * 2 - 1
    return lq, ref, _landmarks(batch, s, seed + 1), _landmarks(batch, s, seed + 2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model512() -> ASFFNet:
    return create_model("asffnet512")


def test_asffnet512_state_dict_has_the_authors_keys_and_shapes(model512: ASFFNet) -> None:
    if not KEY_LIST.is_file():
        pytest.skip(f"the authors' key list is not available at {KEY_LIST}")
    expected = []
    for line in KEY_LIST.read_text().splitlines():
        key, shape = line.split(" ", 1)
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        expected.append((key, dims))
    assert len(expected) == 599
    got = [(k, tuple(v.shape)) for k, v in model512.state_dict().items()]
    assert got == expected


def test_asffnet512_parameter_counts(model512: ASFFNet) -> None:
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(model512) == 23_625_939
    millions = {
        "sff_branch": 13.31, "LQ_Model": 3.76, "Ref_Model": 3.76, "UpModel": 1.11,
        "MSDilate": 0.74, "Component_CModel": 0.64, "Mask_CModel": 0.30,
    }
    for name, m in millions.items():
        assert round(count(getattr(model512, name)) / 1e6, 2) == m, name
    assert model512.config.size == 512 and model512.config.warp == "published"


def test_a_residual_model_adds_its_decoder_output_to_the_input() -> None:
    torch.manual_seed(0)
    residual = ASFFNet(tiny_model_config("test-tiny-residual", residual=True)).eval()
    plain = ASFFNet(tiny_model_config("test-tiny-plain")).eval()
    plain.load_state_dict(residual.state_dict())  # same keys: the residual adds no parameter
    lq, ref, lq_lm, ref_lm = _inputs(residual.config, batch=2)
    with torch.inference_mode():
        expected = (lq + plain(lq, ref, lq_lm, ref_lm)).clamp(-1.0, 1.0)
        assert torch.allclose(residual(lq, ref, lq_lm, ref_lm), expected, atol=1e-6)


def test_the_tone_head_starts_as_the_identity_and_corrects_fading_once_fitted() -> None:
    torch.manual_seed(0)
    toned = ASFFNet(tiny_model_config("test-tiny-tone", residual=True, tone_head=True))
    residual = ASFFNet(tiny_model_config("test-tiny-residual", residual=True)).eval()
    residual.load_state_dict({k: v for k, v in toned.state_dict().items() if not k.startswith("tone.")})
    lq, ref, lq_lm, ref_lm = _inputs(toned.config, batch=2)
    with torch.inference_mode():
        assert torch.allclose(toned.eval()(lq, ref, lq_lm, ref_lm), residual(lq, ref, lq_lm, ref_lm), atol=1e-6)
    # fit the head alone to undo a fade (contrast 0.6, blacks lifted) of random crops
    clean = torch.rand(8, 3, 32, 32) * 2 - 1
    faded = clean * 0.6 + 0.3
    features = torch.randn(8, toned.config.feature_channels, 8, 8)
    optimizer = torch.optim.Adam(toned.tone.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        loss = (toned.tone(faded, features) - clean).abs().mean()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * (faded - clean).abs().mean().item()
    with pytest.raises(ValueError, match="residual"):
        ASFFNetConfig(name="bad", size=32, tone_head=True)


def test_registry_lists_both_configurations_and_builds_the_light_one() -> None:
    assert {"asffnet512", "albumfix-s128"} <= set(list_configs())
    model = create_model("albumfix-s128", device="cpu")
    assert model.config is get_config("albumfix-s128") and model.config.size == 128
    assert model.training and has_spectral_norm(model)
    with pytest.raises(KeyError, match="albumfix-s128"):
        create_model("no-such-model")
    with pytest.raises(ValueError, match="already registered"):
        register_config(get_config("asffnet512"))
    with torch.inference_mode():
        out = model.eval()(*_inputs(model.config, batch=1))
    assert out.shape == (1, 3, 128, 128) and torch.isfinite(out).all()


def test_config_is_frozen_and_validated() -> None:
    with pytest.raises(AttributeError):
        TINY.size = 64  # type: ignore[misc]
    with pytest.raises(ValueError):
        ASFFNetConfig(name="bad", size=30)
    with pytest.raises(ValueError):
        ASFFNetConfig(name="bad", size=32, warp="sideways")


def test_every_module_produces_the_documented_shapes() -> None:
    b, s, f = 2, TINY.size, TINY.feature_channels
    h = s // 4
    img = torch.rand(b, 3, s, s) * 2 - 1
    feat = torch.randn(b, f, h, h)
    with torch.no_grad():
        assert FeatureExtractor(TINY.extractor_widths, f, 2)(img).shape == (b, f, h, h)
        mask_feat = MaskEncoder(TINY.mask_widths, f)(torch.zeros(b, 1, s, s))
        assert mask_feat.shape == (b, f, h, h) and ((mask_feat > 0) & (mask_feat < 1)).all()
        assert ComponentConditioner(f)(feat).shape == (b, f, h, h)
        assert SFFLayer(f)(feat, feat, mask_feat).shape == (b, f, h, h)
        assert SFFLayer(f, last=True)(feat, feat, mask_feat).shape == (b, f, h, h)
        assert ASFFBlock(f)(feat, feat, mask_feat).shape == (b, f, h, h)
        assert MSDilate(f)(feat).shape == (b, f, h, h)
        out = decoder(f, TINY.decoder_channels)(feat)
        assert out.shape == (b, 3, s, s) and out.abs().max() <= 1
        assert landmark_mask(_landmarks(b, s, 0), s, 1).shape == (b, 1, s, s)
        assert adaptive_instance_norm(feat, feat * 2).shape == feat.shape


def test_sff_layer_blends_degraded_and_reference_by_the_attention_map() -> None:
    torch.manual_seed(0)
    layer = SFFLayer(8).eval()
    x, g, m = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6), torch.rand(1, 8, 6, 6)
    with torch.no_grad():
        d, r = layer.DegradedModel(x), layer.RefModel(g)
        a = layer.MaskModel(torch.cat((layer.MaskConcat(m), layer.DegradedConcat(d), layer.RefConcat(r)), 1))
        assert torch.allclose(layer(x, g, m), d + (r - d) * a, atol=1e-6)


def test_random_model_forward_is_finite_in_train_and_eval_mode() -> None:
    torch.manual_seed(0)
    model = ASFFNet(TINY)
    inputs = _inputs(TINY)
    out_train = model(*inputs)
    assert out_train.shape == (2, 3, 32, 32) and torch.isfinite(out_train).all()
    out_train.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.inference_mode():
        out = model.eval()(*inputs)
    assert torch.isfinite(out).all() and out.abs().max() <= 1


def test_forward_rejects_inputs_of_the_wrong_size() -> None:
    model = ASFFNet(TINY).eval()
    lq, ref, lm_lq, lm_ref = _inputs(TINY)
    with pytest.raises(ValueError, match="test-tiny"):
        model(lq[..., :16, :16], ref[..., :16, :16], lm_lq, lm_ref)
    with pytest.raises(ValueError, match="landmarks"):
        model(lq, ref, lm_lq[:, :51], lm_ref)


def test_adain_gives_content_the_style_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    content = torch.randn(2, 3, 8, 8, generator=g) * 4 + 1
    style = torch.randn(2, 3, 8, 8, generator=g) * 0.5 - 2
    out = adaptive_instance_norm(content, style)
    assert torch.allclose(out.mean((2, 3)), style.mean((2, 3)), atol=1e-5)
    expected_std = (style.flatten(2).var(-1) + 1e-5).sqrt() / (content.flatten(2).var(-1) + 1e-5).sqrt()
    assert torch.allclose(out.flatten(2).std(-1), content.flatten(2).std(-1) * expected_std, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = adaptive_instance_norm(content.bfloat16(), style.bfloat16())
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), out, atol=0.1)


def test_adain_keeps_a_channels_last_layout() -> None:
    """The engine runs the model channels_last on a GPU; AdaIN keeps the layout (its flatten of a
    channels_last tensor is a view), so only the warp needed a fix."""
    g = torch.Generator().manual_seed(1)
    content, style = torch.randn(2, 6, 8, 8, generator=g), torch.randn(2, 6, 8, 8, generator=g)
    out = adaptive_instance_norm(content.contiguous(memory_format=torch.channels_last), style)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert torch.allclose(out, adaptive_instance_norm(content, style), atol=1e-6)
    assert adaptive_instance_norm(content, style).is_contiguous()


def test_landmark_mask_follows_the_published_rule_at_512() -> None:
    lms = _landmarks(2, 512, 3).numpy()
    lms[0, 20] = (0.5, 100.0)  # x <= 1: not drawn
    lms[0, 21] = (300.0, 510.0)  # y >= 512 - 2: not drawn
    lms[1, 30] = (200.0, 150.0)  # integer point: 6 x 6 square
    lms[1, :17] = (256.0, 256.0)  # jaw points are never drawn
    got = landmark_mask(torch.from_numpy(lms), 512, 3).numpy()
    expected = np.zeros((2, 1, 512, 512), np.float32)
    for b in range(2):
        for x, y in lms[b, 17:]:
            if 1 < x < 510 and 1 < y < 510:
                expected[b, 0, math.floor(y) - 3 : math.ceil(y) + 3, math.floor(x) - 3 : math.ceil(x) + 3] = 1
    np.testing.assert_array_equal(got, expected)
    assert got[1, 0, 147:153, 197:203].all() and not got[1, 0, 153, 200] and not got[1, 0, 146, 200]
    assert got[0, 0, :, :4].sum() == 0


def test_sn_conv_matches_torch_spectral_norm_in_eval_and_training() -> None:
    torch.manual_seed(0)
    reference = nn.utils.spectral_norm(nn.Conv2d(6, 5, 3, padding=2, dilation=2))
    ours = SNConv2d(6, 5, 3, padding=2, dilation=2)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 6, 9, 9)
    reference.eval(), ours.eval()
    assert torch.allclose(ours(x), reference(x), atol=1e-6)
    reference.train(), ours.train()
    assert torch.allclose(ours(x), reference(x), atol=1e-6)  # one power iteration each
    assert torch.allclose(ours.weight_u, reference.weight_u, atol=1e-6)
    assert torch.allclose(ours.weight_v, reference.weight_v, atol=1e-6)


def test_sn_sigma_tracks_the_largest_singular_value_and_eval_keeps_u_v() -> None:
    torch.manual_seed(1)
    conv = SNConv2d(16, 32, 3, padding=1)
    true_sigma = torch.linalg.matrix_norm(conv.weight_orig.detach().reshape(32, -1), ord=2)
    assert conv.sigma().item() == pytest.approx(true_sigma.item(), rel=0.05)  # after init iterations
    conv.power_iteration(200)
    assert conv.sigma().item() == pytest.approx(true_sigma.item(), rel=1e-4)
    u = conv.weight_u.clone()
    conv.eval()(torch.randn(1, 16, 5, 5))
    assert torch.equal(conv.weight_u, u)
    with torch.no_grad():
        conv.weight_orig.mul_(-1.0).add_(torch.randn_like(conv.weight_orig))
    conv.train()(torch.randn(1, 16, 5, 5))
    assert not torch.equal(conv.weight_u, u)


def test_folded_model_matches_the_unfolded_eval_forward() -> None:
    torch.manual_seed(2)
    model = ASFFNet(TINY)
    model(*_inputs(TINY, seed=5))  # a training step moves u, v away from their init
    model.eval()
    inputs = _inputs(TINY, seed=7)
    with torch.inference_mode():
        expected = model(*inputs)
    fold_spectral_norm(model)
    assert model.is_folded and not any(isinstance(m, SNConv2d) for m in model.modules())
    assert not any(k.endswith("weight_orig") for k in model.state_dict())
    with torch.inference_mode():
        assert torch.allclose(model(*inputs), expected, atol=1e-5)


def test_forward_under_bf16_autocast_is_finite_and_close_to_fp32() -> None:
    torch.manual_seed(3)
    model = fold_spectral_norm(ASFFNet(TINY).eval())
    inputs = _inputs(TINY, seed=9)
    with torch.inference_mode():
        expected = model(*inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(*inputs)
    assert torch.isfinite(out).all()
    assert (out.float() - expected).abs().mean() < 0.02


def test_exact_warp_with_identical_landmarks_leaves_guidance_features_unchanged() -> None:
    model = ASFFNet(TINY).eval()
    feats = torch.randn(2, TINY.feature_channels, 8, 8)
    lms = _landmarks(2, TINY.size, 11)
    assert torch.allclose(model.warp_guidance(feats, lms, lms), feats, atol=1e-4)
