"""dali: NVIDIA DALI's CPU pipeline: fn.readers.file + fn.decoders.image(device="cpu") +
fn.random_resized_crop(224) + fn.flip(coin_flip) + fn.transpose to CHW, DALIGenericIterator.
DALI cannot reset mid-epoch, so its warm-up is one whole untimed epoch."""
from __future__ import annotations

from typing import Any, Dict

from .. import BATCH
from ..harness import cores, dist_version, result, self_rss_mb, timed


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    import nvidia.dali as dali  # noqa: I001
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    import torch
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    rss0 = self_rss_mb()
    threads = cores()

    @dali.pipeline_def(batch_size=BATCH, num_threads=threads, device_id=None, seed=1234)
    def train_pipe():
        jpegs, labels = fn.readers.file(file_root=spec["corpus"], random_shuffle=True, name="Reader")
        images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        images = fn.random_resized_crop(images, size=(224, 224))
        images = fn.flip(images, horizontal=fn.random.coin_flip())
        images = fn.transpose(images, perm=[2, 0, 1])  # HWC -> CHW, as the others give
        return images, labels

    holder: Dict[str, Any] = {}

    def warmup_iter():
        pipe = train_pipe()
        pipe.build()
        holder["it"] = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader",
                                           last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True)
        return iter(holder["it"])

    def end_warmup():
        # DALI cannot reset mid-epoch: finish the warm-up epoch (untimed) so the timed ones are whole
        it = holder["it"]
        while True:  # next(), not iter(): iter() mid-epoch warns and ignores a reset
            try:
                next(it)
            except StopIteration:
                break

    res = timed(lambda epoch: iter(holder["it"]), spec, lambda b: int(b[0]["images"].shape[0]), warmup_iter,
                end_warmup)
    return result(res, rss0, {"num_threads": threads, "batch_size": BATCH, "device": "cpu",
                              "layout": "CHW uint8 (fn.transpose)"},
                  {"nvidia-dali-cuda120": dist_version("nvidia-dali-cuda120"), "torch": torch.__version__})
