"""The PIL path the peers that store raw image bytes decode with (litdata, streaming,
webdataset): Image.open + torchvision's RandomResizedCrop(224) + RandomHorizontalFlip() +
PILToTensor(). Where torchvision imports (.venv-baseline) the real transforms run; beside torch
2.13.0 it does not import, so train_transform copies torchvision 0.29's
RandomResizedCrop.get_params and does what its PIL path does: the same work."""
from __future__ import annotations

import io
import math
import random


def train_transform(size: int = 224):
    """A function PIL image -> uint8 CHW tensor."""
    import numpy as np
    import torch
    from PIL import Image
    scale, ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def get_params(width: int, height: int):
        area = height * width
        for _ in range(10):
            target_area = area * random.uniform(*scale)
            aspect = math.exp(random.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        in_ratio = float(width) / float(height)
        if in_ratio < min(ratio):
            w = width
            h = int(round(w / min(ratio)))
        elif in_ratio > max(ratio):
            h = height
            w = int(round(h * max(ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    try:  # the real thing where torchvision imports (.venv-baseline)
        from torchvision import transforms as T
        tv = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.PILToTensor()])
        return lambda img: tv(img.convert("RGB"))
    except Exception:  # torch 2.13.0: "operator torchvision::nms does not exist"
        pass

    def tf(img: "Image.Image") -> "torch.Tensor":
        img = img.convert("RGB")  # what ImageFolder's loader does
        i, j, h, w = get_params(*img.size)
        img = img.crop((j, i, j + w, i + h)).resize((size, size), Image.BILINEAR)
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.as_tensor(np.array(img, copy=True)).permute(2, 0, 1)  # PILToTensor: CHW view

    return tf


def transform_name() -> str:
    try:
        import torchvision
        return f"torchvision {torchvision.__version__} transforms"
    except Exception:
        return "torchvision's transforms re-implemented on PIL (torchvision does not import)"


def decode(data: bytes):
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


_TF = None


def decode_and_transform(data: bytes):
    """decode + train_transform, the transform made once per process (loader workers too)."""
    global _TF
    if _TF is None:
        _TF = train_transform()
    return _TF(decode(data))
