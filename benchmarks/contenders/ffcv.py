"""ffcv: a .beton written once (DatasetWriter, RGBImageField write_mode="jpg" quality 90: the
JPEGs are re-encoded) read by Loader(order=RANDOM, os_cache=True) with
RandomResizedCropRGBImageDecoder(224) + RandomHorizontalFlip + ToTensor + ToTorchImage. The
warm-up is one whole untimed epoch of the same Loader (numba compiles its pipeline there)."""
from __future__ import annotations

import os
from typing import Any, Dict

from .. import BATCH
from ..corpus import cache_dir, samples, write_once
from ..harness import cores, dist_version, result, self_rss_mb, timed


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch
    from ffcv.fields import IntField, RGBImageField
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage
    from ffcv.writer import DatasetWriter
    from PIL import Image
    corpus = spec["corpus"]
    items = samples(corpus)

    class DS:
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            p, label = items[i]
            return Image.open(os.path.join(corpus, p)).convert("RGB"), label

    def write(tmp: str) -> None:
        os.makedirs(tmp)
        w = DatasetWriter(os.path.join(tmp, "train.beton"),
                          {"image": RGBImageField(write_mode="jpg", jpeg_quality=90), "label": IntField()},
                          num_workers=cores())
        w.from_indexed_dataset(DS())

    beton = os.path.join(write_once(cache_dir("peers/ffcv", corpus), write), "train.beton")
    rss0 = self_rss_mb()
    workers = cores()

    def loader(indices=None):  # fresh pipeline objects per Loader: FFCV binds them to it
        pipelines = {"image": [RandomResizedCropRGBImageDecoder((224, 224)), RandomHorizontalFlip(),
                               ToTensor(), ToTorchImage()],
                     "label": [IntDecoder(), ToTensor()]}
        return Loader(beton, batch_size=BATCH, num_workers=workers, order=OrderOption.RANDOM,
                      pipelines=pipelines, indices=indices, os_cache=True, drop_last=False)

    holder: Dict[str, Any] = {}

    def warmup_iter():
        # One Loader throughout: a new one compiles its pipeline (numba) again on first use.
        holder["dl"] = loader()
        holder["it"] = iter(holder["dl"])
        return holder["it"]

    def end_warmup():  # finish the warm-up epoch, untimed, so that the timed ones are whole
        for _ in holder["it"]:
            pass

    res = timed(lambda epoch: iter(holder["dl"]), spec, lambda b: int(b[0].shape[0]), warmup_iter, end_warmup)
    return result(res, rss0, {"num_workers": workers, "batch_size": BATCH, "write_mode": "jpg q90 (re-encoded)",
                              "os_cache": True, "drop_last": False},
                  {"ffcv": dist_version("ffcv"), "torch": torch.__version__})
