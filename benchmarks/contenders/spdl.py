"""spdl: spdl.io.demux_image + decode_packets with an FFmpeg filter crop (torchvision's
RandomResizedCrop parameters), scale=224:224 bilinear, hflip half the time, rgb24;
convert_frames per batch; spdl.pipeline with decode concurrency = cores."""
from __future__ import annotations

import math
import os
import random
from typing import Any, Dict

from .. import BATCH
from ..corpus import samples
from ..harness import cores, dist_version, result, self_rss_mb, timed


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    import numpy as np
    import spdl.io
    import torch
    from spdl.pipeline import PipelineBuilder
    paths = [os.path.join(spec["corpus"], p) for p, _ in samples(spec["corpus"])]
    rss0 = self_rss_mb()
    threads = cores()
    scale, log_ratio = (0.08, 1.0), (math.log(3 / 4), math.log(4 / 3))

    def crop_params(width: int, height: int):
        area = width * height
        for _ in range(10):
            ta = area * random.uniform(*scale)
            ar = math.exp(random.uniform(*log_ratio))
            w, h = int(round(math.sqrt(ta * ar))), int(round(math.sqrt(ta / ar)))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, width - w), random.randint(0, height - h), w, h
        s = min(width, height)
        return (width - s) // 2, (height - s) // 2, s, s

    def decode(path: str):
        packets = spdl.io.demux_image(path)
        w, h = packets.codec.width, packets.codec.height
        x, y, cw, ch = crop_params(w, h)
        flt = f"crop={cw}:{ch}:{x}:{y},scale=224:224:flags=bilinear"
        if random.random() < 0.5:
            flt += ",hflip"
        flt += ",format=rgb24"
        return spdl.io.decode_packets(packets, filter_desc=flt)

    def collate(frames):
        buf = spdl.io.convert_frames(frames)
        return torch.from_numpy(np.asarray(buf)).permute(0, 3, 1, 2)  # NHWC -> NCHW view

    def run_pipe(order):
        p = (PipelineBuilder().add_source(order)
             .pipe(decode, concurrency=threads)
             .aggregate(BATCH, drop_last=False)
             .pipe(collate)
             .add_sink(2)
             .build(num_threads=threads))
        with p.auto_stop():
            for b in p:
                yield b

    def warmup_iter():
        return run_pipe(random.sample(paths, min(len(paths), spec["warmup"] * BATCH)))

    res = timed(lambda epoch: run_pipe(random.sample(paths, len(paths))), spec, lambda b: int(b.shape[0]),
                warmup_iter)
    return result(res, rss0, {"threads": threads, "batch_size": BATCH,
                              "transform": "FFmpeg filter crop,scale(bilinear),hflip,format=rgb24"},
                  {"spdl": dist_version("spdl"), "spdl-io": dist_version("spdl-io"), "torch": torch.__version__})
