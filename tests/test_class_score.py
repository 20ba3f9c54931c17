"""The motion-class score (walt.eval.class_score), label influence, and the latent motion toy."""

from __future__ import annotations

import pytest
import torch

from walt.eval.class_score import (ClassifierConfig, MotionClassifier, class_accuracy, classifier_for, classify,
                                   feature_frechet, train_classifier, write_confusion_png)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _clips(n, seed, size=16, classes=("bouncing", "sliding"), frames=9):
    from walt.demo.clips import DemoVideos

    ds = DemoVideos(n, frames, size, seed, classes, backgrounds=("plain",), textures=("two-tone",), shape_scale=1.8,
                    speed_scale=2.0)
    return torch.stack([ds[i]["video"] for i in range(n)]), torch.tensor([ds[i]["label"] for i in range(n)])


def test_accuracy_confusion_and_feature_fd():
    acc = class_accuracy(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 4)
    assert acc["accuracy"] == 0.75 and acc["confusion"][2] == [0, 1, 1, 0]
    assert acc["per_class"][:3] == [1.0, 1.0, 0.5] and acc["per_class"][3] != acc["per_class"][3]  # NaN: no clip
    a = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    b = torch.randn(300, 8, generator=torch.Generator().manual_seed(1))
    assert feature_frechet(a, b) < 0.5 < feature_frechet(a, b + 1.0)  # same distribution vs a shifted one


def test_classifier_shapes_determinism_and_cache(tmp_path):
    from walt.autoencoder import CausalVAE

    x, y = _clips(16, 0)
    clf = MotionClassifier(2, width=4, frames=9)
    assert clf(x).shape == (16, 2) and clf.features(x).shape == (16, 64)
    with pytest.raises(ValueError, match="9-frame"):
        clf.features(x[:, :, :5])
    cfg = ClassifierConfig(width=4, steps=3, batch_size=4, train_clips=8)
    a, b = train_classifier(x, y, 2, cfg), train_classifier(x, y, 2, cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # deterministic from the seed

    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny", base_channels=4, channel_multipliers=(1, 2), num_res_blocks=1,
                                spatial_factor=4, temporal_factor=4, latent_channels=4, norm_groups=4)
    calls = []

    def clips(n):
        calls.append(n)
        return _clips(n, 0)

    key = {"dataset": "test"}
    clf1, info1 = classifier_for(vae, clips, 2, key, cfg, folder=tmp_path)
    clf2, info2 = classifier_for(vae, clips, 2, key, cfg, folder=tmp_path)
    assert not info1["cached"] and info2["cached"] and calls == [8]  # trained once, then read back
    assert torch.equal(classify(clf1, x)[1], classify(clf2, x)[1])
    _, info3 = classifier_for(vae, clips, 2, {"dataset": "other"}, cfg, folder=tmp_path)
    assert not info3["cached"]  # other clips: another classifier
    real, info4 = classifier_for(None, clips, 2, key, cfg, folder=tmp_path)  # no autoencoder: trained on the clips
    assert not info4["cached"] and classifier_for(None, clips, 2, key, cfg, folder=tmp_path)[1]["cached"]
    assert torch.equal(classify(real, x)[1], classify(train_classifier(*_clips(8, 0), 2, cfg), x)[1])
    write_confusion_png([[3, 1], [0, 4]], ["bouncing", "sliding"], tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").stat().st_size > 0


@pytest.mark.slow  # ~1-2 min on 2 cores: the classifier as the demo trains it
def test_classifier_reads_motion_not_appearance():
    """Near-perfect on held-out real clips, clearly lower with the frames shuffled, chance on noise."""
    from walt.demo import demo_config
    from walt.demo.clips import demo_videos

    cfg = demo_config("cpu")

    def clips(n, seed):
        ds = demo_videos(cfg, n, seed)
        return torch.stack([ds[i]["video"] for i in range(n)]), torch.tensor([ds[i]["label"] for i in range(n)])

    torch.set_num_threads(2)
    x, y = clips(1024, 0)
    xt, yt = clips(256, 1)
    clf = train_classifier(x, y, 8, ClassifierConfig(steps=600))
    real = class_accuracy(classify(clf, xt)[0], yt, 8)["accuracy"]
    g = torch.Generator().manual_seed(0)
    shuffled = torch.stack([v[:, torch.randperm(v.shape[1], generator=g)] for v in xt])
    shuffled_acc = class_accuracy(classify(clf, shuffled)[0], yt, 8)["accuracy"]
    noise_acc = class_accuracy(classify(clf, torch.rand_like(xt) * 2 - 1)[0], yt, 8)["accuracy"]
    assert real >= 0.9, real
    assert shuffled_acc <= real - 0.3, (real, shuffled_acc)
    assert abs(noise_acc - 1 / 8) <= 0.1, noise_acc


def test_label_influence_sees_a_label_that_matters_and_one_that_does_not():
    from walt.diffusion import DiffusionSchedule
    from walt.eval.label_influence import label_influence

    class Net(torch.nn.Module):  # v = label embedding (or zero): its x0 estimate depends on y only if `uses`
        def __init__(self, uses):
            super().__init__()
            self.config = type("C", (), {"num_classes": 4})()
            self.null_class, self.uses = 4, uses
            self.table = torch.randn(5, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))

        def forward(self, x, t, y=None, **kw):
            return self.table[y] if self.uses else torch.zeros_like(x)

    x0, y = torch.randn(8, 2, 3, 4, 4), torch.arange(8) % 4
    sched = DiffusionSchedule()
    assert label_influence(Net(False), sched, x0, y)["swap"] == 0.0
    li = label_influence(Net(True), sched, x0, y)
    assert li["swap"] > 0.1 and li["null"] > 0.1 and {"swap@300", "null@700"} <= set(li)


def test_toy_latents_directions_and_a_quick_run():
    from walt.bench.toy import ToySettings, markdown, motion_direction, quick, run_toy, toy_latents

    for variant in ("positive", "random_sign"):
        x, y = toy_latents(64, variant, seed=0)
        assert x.shape == (64, 8, 5, 8, 8) and (motion_direction(x) == y).all()  # real clips: 1.0
        assert (motion_direction(x.flip(2)) != y).all()  # played backwards: never the asked direction
    with pytest.raises(ValueError, match="unknown toy variant"):
        toy_latents(4, "negative", 0)
    r = run_toy(quick(ToySettings()))
    keys = {"motion_accuracy", "frame_prediction_motion_accuracy", "label_influence", "seconds"}
    assert keys <= set(r) and keys <= set(r["random_sign"]) and all(0 <= r[k] <= 1 for k in keys - {"seconds", "label_influence"})
    assert "random_sign" in "\n".join(markdown(r))


@pytest.mark.slow  # ~5 min on 2 cores: the toy at its real size
def test_toy_demo_size_denoiser_learns_the_positive_variant():
    from walt.bench.toy import ToySettings, run_variant

    torch.set_num_threads(2)
    r = run_variant("positive", ToySettings(), torch.device("cpu"), log=lambda m: None)
    assert r["motion_accuracy"] >= 0.9 and r["frame_prediction_motion_accuracy"] >= 0.9, r
    assert r["seconds"] <= 300, r["seconds"]
