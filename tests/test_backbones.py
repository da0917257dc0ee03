"""helpers.backbones: ResNet50 weights found or refused clearly, the offline model verified."""

from __future__ import annotations

import json
import os

import pytest
import skimage.data
import torch
from PIL import Image
from torchvision import models

from helpers.backbones import BackboneError, load_backbone
from helpers.settings import load_settings

PHOTOS = {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
          for name in ("chelsea", "coffee", "rocket", "astronaut")}


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """A private, empty torch hub cache: a cache on the developer's machine changes nothing."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def resnet_state():
    torch.manual_seed(1)
    return models.resnet50().state_dict()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, resnet_state):
    path = tmp_path_factory.mktemp("weights") / "my_resnet50.pth"
    torch.save(resnet_state, path)
    return path


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0", verbose=False)


def test_random_resnet50_is_said_aloud_and_gives_2048_pooled(capsys):
    bb = load_backbone("random_resnet50")
    assert "random" in capsys.readouterr().out.lower()
    assert (bb.name, bb.weights_id, bb.dim, bb.classifier) == ("random_resnet50", "random(seed=0)", 2048, None)
    with torch.inference_mode():
        out = bb.model(torch.stack([bb.transform(PHOTOS["coffee"])] * 2))
    assert out.shape == (2, 2048)
    again = load_backbone("random_resnet50", verbose=False)
    assert torch.equal(again.model.conv1.weight, bb.model.conv1.weight)  # seeded
    with pytest.raises(BackboneError, match="random"):
        bb.classify([PHOTOS["coffee"]])


def test_resnet50_preprocessing_is_the_weights_own():
    bb = load_backbone("random_resnet50", verbose=False)
    reference = models.ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert torch.equal(bb.transform(PHOTOS["chelsea"]), reference(PHOTOS["chelsea"]))
    assert bb.preprocessing["resize"] == [232] and bb.preprocessing["crop"] == [224]
    assert bb.preprocessing["mean"] == [0.485, 0.456, 0.406]


def _pooled(state, x):
    """Reference descriptor: torchvision's ResNet50 with `state` loaded, the head replaced by Identity."""
    net = models.resnet50()
    net.load_state_dict(state)
    net.fc = torch.nn.Identity()
    with torch.inference_mode():
        return net.eval()(x)


def test_local_weights_file_of_unknown_origin_loads_and_says_so(weights_file, resnet_state):
    bb = load_backbone("resnet50", weights=weights_file, verbose=False, download=False)
    assert bb.name == "resnet50" and bb.dim == 2048 and bb.weights_id.startswith("file:")
    assert "unknown origin" in bb.reason and "preprocessing ASSUMED" in bb.reason
    assert bb.preprocessing["source"].startswith("assumed")     # recorded in every features.json
    assert bb.classifier is None                                # its 1000 classes are not ImageNet's
    x = bb.transform(PHOTOS["rocket"])[None]
    with torch.inference_mode():
        features = bb.model(x)
    assert features.shape == (1, 2048)                          # the descriptor, not the logits
    assert torch.allclose(features, _pooled(resnet_state, x), atol=1e-4)


def test_weights_report_says_a_file_is_of_unknown_origin(weights_file):
    from helpers.backbones import weights_report
    from helpers.settings import load_settings

    report = weights_report(load_settings({"SIMSEARCH_WEIGHTS": str(weights_file)}))
    assert report.chosen.startswith("resnet50 (2048-d, weights file:")
    assert report.chosen.endswith("; preprocessing assumed (weights of unknown origin): "
                                  "ResNet50_Weights.IMAGENET1K_V2.transforms()")


@pytest.mark.parametrize("variant", ["10-class head", "no head", "module. prefix", "both"])
def test_any_resnet50_state_dict_gives_the_same_descriptor(tmp_path, resnet_state, variant):
    """A fine-tuned head, a headless backbone or a DataParallel checkpoint: the head is thrown
    away, so only the body decides the features."""
    state = {k: v for k, v in resnet_state.items() if not k.startswith("fc.")}
    if variant in ("10-class head", "both"):
        state.update({"fc.weight": torch.randn(10, 2048), "fc.bias": torch.randn(10)})
    if variant in ("module. prefix", "both"):
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "fine_tuned.pth"
    torch.save(state, path)
    bb = load_backbone("auto", weights=path, verbose=False, download=False)
    x = bb.transform(PHOTOS["coffee"])[None]
    with torch.inference_mode():
        assert torch.allclose(bb.model(x), _pooled(resnet_state, x), atol=1e-4)
    head = "10-class head dropped" if variant in ("10-class head", "both") else "no classification head"
    assert head in bb.reason and bb.classifier is None


def test_auto_uses_an_explicit_file(weights_file):
    assert load_backbone("auto", weights=weights_file, verbose=False, download=False).name == "resnet50"


def test_wrong_keys_give_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(BackboneError, match="not a torchvision ResNet50 state dict"):
        load_backbone("resnet50", weights=path, download=False)


def test_wrong_shapes_give_a_clear_error(tmp_path, resnet_state):
    state = dict(resnet_state, **{"conv1.weight": torch.zeros(32, 3, 7, 7)})   # another width
    path = tmp_path / "narrow.pth"
    torch.save(state, path)
    with pytest.raises(BackboneError, match=r"wrong shape.*conv1\.weight is \(32, 3, 7, 7\)"):
        load_backbone("resnet50", weights=path, download=False)


def test_corrupt_file_gives_a_clear_error(tmp_path, weights_file):
    path = tmp_path / "truncated.pth"
    path.write_bytes(weights_file.read_bytes()[:100_000])
    with pytest.raises(BackboneError, match="corrupt"):
        load_backbone("resnet50", weights=path, download=False)


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": Image.new("RGB", (2, 2))}, path)
    with pytest.raises(BackboneError, match="weights_only"):
        load_backbone("resnet50", weights=path, download=False)


def test_resnet50_asked_for_but_missing_says_how_to_provide(tmp_path):
    with pytest.raises(BackboneError, match=r"not available.*weights=PATH.*--weights"):
        load_backbone("resnet50", download=False)


def test_hub_cache_file_is_hash_checked(empty_hub, weights_file, capsys):
    """Random weights copied under torchvision's file name are not reported as IMAGENET1K_V2."""
    empty_hub.mkdir(parents=True)
    os.symlink(weights_file, empty_hub / "resnet50-11ad3fa6.pth")
    bb = load_backbone("auto", verbose=False, download=False)
    assert bb.name == "efficientnet_lite0"
    assert "is not torchvision's IMAGENET1K_V2" in bb.reason and "SIMSEARCH_WEIGHTS" in bb.reason
    with pytest.raises(BackboneError, match="is not torchvision's IMAGENET1K_V2"):
        load_backbone("resnet50", verbose=False, download=False)


def test_hub_cache_file_with_its_published_hash_is_used(tmp_path, empty_hub, resnet_state, monkeypatch):
    import helpers.backbones as backbones

    url = _served(empty_hub, resnet_state)        # saved straight into the cache, correctly named
    monkeypatch.setattr(backbones, "RESNET50_WEIGHTS", (_LocalWeights(url),))
    bb = load_backbone("auto", verbose=False, download=False)
    assert (bb.name, bb.weights_id) == ("resnet50", "IMAGENET1K_V2")
    assert "hub cache" in bb.reason and "hash checked" in bb.reason
    assert bb.classifier is not None               # known ImageNet weights keep their classes


def test_auto_offline_falls_back_to_lite0_with_a_notice(capsys):
    bb = load_backbone("auto", download=False)
    printed = capsys.readouterr().out
    assert bb.name == "efficientnet_lite0" and bb.dim == 1280
    assert "NOTICE" in printed and "efficientnet_lite0" in printed
    assert "ResNet50 weights not found" in bb.reason


def test_a_weights_file_only_goes_with_resnet50(weights_file):
    with pytest.raises(BackboneError, match="weights file is for ResNet50"):
        load_backbone("efficientnet_lite0", weights=weights_file)


def test_an_unknown_backbone_is_refused_with_the_registered_names():
    with pytest.raises(BackboneError) as err:
        load_backbone(load_settings({"SIMSEARCH_BACKBONE": " VGG16 "}).backbone)
    message = str(err.value)
    assert message.startswith("unknown backbone 'vgg16'") and "\n" not in message
    assert all(name in message for name in ("auto", "resnet50", "efficientnet_lite0", "random_resnet50"))


def test_a_new_backbone_is_one_registry_entry(tmp_path, monkeypatch, capsys):
    """Registering a loader is all it takes: settings, load_backbone and the CLI then accept it."""
    from helpers import backbones
    from helpers.__main__ import main
    from tests.conftest import write_photo
    from tests.test_store import tiny_backbone

    monkeypatch.setitem(backbones.REGISTRY, "tiny_cnn", lambda weights, download, verbose: tiny_backbone("tiny_cnn"))
    assert "tiny_cnn" in backbones.names()
    assert load_backbone(load_settings({"SIMSEARCH_BACKBONE": "Tiny_CNN"}).backbone, verbose=False).dim == 48
    for i in range(3):
        write_photo(tmp_path / "photos" / f"p{i}.png", seed=i)
    assert main(["manifest", str(tmp_path / "photos"), "--out", str(tmp_path / "m.csv"), "--quiet"]) == 0
    assert main(["features", str(tmp_path / "m.csv"), "--out", str(tmp_path / "f.npy"), "--backbone", "tiny_cnn",
                 "--quiet"]) == 0
    meta = json.loads((tmp_path / "f.json").read_text())
    assert (meta["backbone"], meta["dim"], meta["count"]) == ("tiny_cnn", 48, 3)


def test_lite0_top5_classes_on_bundled_photos(lite0):
    expected = {"chelsea": {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"},
                "coffee": {"espresso", "cup"}, "rocket": {"missile", "projectile"}}
    top5 = lite0.classify([PHOTOS[name] for name in expected])
    for (name, accept), classes in zip(expected.items(), top5):
        assert accept & {c for c, _ in classes}, f"{name}: top-5 was {classes}"
    with torch.inference_mode():
        assert lite0.model(lite0.transform(PHOTOS["coffee"])[None]).shape == (1, 1280)


def test_lite0_preprocessing_matches_the_statistics_its_weights_learned(lite0):
    """The stem's BatchNorm remembers the variance of its input during training: with the right
    normalisation (mean = std = 0.5) our photos match it; with ImageNet mean/std they do not.
    Also: the backbone's model (BatchNorms folded) gives the unfolded network's pooled features."""
    net = load_backbone("efficientnet_lite0", verbose=False, fold_bn=False).model.net
    x = torch.stack([lite0.transform(img) for img in PHOTOS.values()])
    imagenet = (x * 0.5 + 0.5 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
        / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.inference_mode():
        def log_var_ratio(batch):
            return (net._conv_stem(batch).var(dim=(0, 2, 3)) / net._bn0.running_var).log().median().item()
        assert abs(log_var_ratio(x)) < 0.5
        assert log_var_ratio(imagenet) > 1.0
        raw = net.extract_features(x).mean(dim=(2, 3))
        torch.testing.assert_close(lite0.model(x), raw, rtol=1e-4, atol=1e-4)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.model.modules())


class _LocalWeights:
    """torchvision's IMAGENET1K_V2 entry, but served from a file:// URL: the download path runs
    for real (urllib, torch.hub's hash check, the hub cache) without a network."""

    def __init__(self, url: str):
        self.url, self.name = url, "IMAGENET1K_V2"

    @staticmethod
    def transforms():
        return models.ResNet50_Weights.IMAGENET1K_V2.transforms()


def _served(folder, state, tamper: bool = False) -> str:
    """Save `state` as torchvision names its files (resnet50-<sha256 prefix>.pth); return its URL."""
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "upload.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    if tamper:
        tmp.write_bytes(tmp.read_bytes() + b"corrupted in transit")
    path = tmp.rename(folder / f"resnet50-{digest}.pth")
    return path.as_uri()


def test_download_lands_in_the_hub_cache_and_is_reused(tmp_path, empty_hub, resnet_state, monkeypatch):
    import helpers.backbones as backbones

    monkeypatch.setattr(backbones, "RESNET50_WEIGHTS", (_LocalWeights(_served(tmp_path / "server", resnet_state)),))
    bb = load_backbone("auto", verbose=False)
    assert (bb.name, bb.dim, bb.weights_id) == ("resnet50", 2048, "IMAGENET1K_V2")
    assert "downloaded" in bb.reason and len(list(empty_hub.glob("resnet50-*.pth"))) == 1
    assert "hub cache" in load_backbone("auto", verbose=False, download=False).reason


def test_a_download_that_fails_its_hash_check_falls_back(tmp_path, empty_hub, resnet_state, monkeypatch):
    import helpers.backbones as backbones

    url = _served(tmp_path / "server", resnet_state, tamper=True)
    monkeypatch.setattr(backbones, "RESNET50_WEIGHTS", (_LocalWeights(url),))
    bb = load_backbone("auto", verbose=False)
    assert bb.name == "efficientnet_lite0" and "download failed" in bb.reason
    with pytest.raises(BackboneError, match="download failed"):
        load_backbone("resnet50", verbose=False)
