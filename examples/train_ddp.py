"""Train a small classifier under DDP on mx8 batches, with mid-epoch checkpoints.

    torchrun --nproc-per-node=2 --max-restarts=1 examples/train_ddp.py DATASET --ckpt /tmp/ckpt.pt

Kill it at any time and run the same command again: it resumes at the next unseen batch
of the epoch it was in, and every sample of that epoch is still seen exactly once (up to the
reported tail padding). Works with a different --nproc-per-node on resume too.
"""
import argparse
import os

import torch
import torch.distributed as dist

import mx8


def init_process_group(backend: str) -> None:
    """init_process_group over torchrun's store under a per-attempt prefix. torchrun's agent
    store outlives a restart (--max-restarts), and with torch 2.13 restarted ranks otherwise
    read the dead attempt's gloo addresses and fail ('connectFullMesh ... Connection refused')."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
    dist.init_process_group(backend, store=dist.PrefixStore(f"attempt{attempt}", store),
                            rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", help="packed dataset or ImageFolder directory (optionally @sha256:<hash>)")
    p.add_argument("--ckpt", required=True, help="checkpoint file (rank 0 writes it)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()

    init_process_group("gloo")  # "nccl" on GPUs
    rank = dist.get_rank()
    ds = mx8.Dataset(a.dataset, batch_size=a.batch_size, size=a.size, crop="random", flip=True, shuffle=True)
    classes = len(ds.snapshot.labels or ()) or 1
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(16, classes))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)

    start_epoch = 0
    if os.path.exists(a.ckpt):
        ckpt = torch.load(a.ckpt, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        ds.load_state_dict(ckpt["data"])  # epoch + position in the epoch
        start_epoch = ckpt["data"]["epoch"]

    for epoch in range(start_epoch, a.epochs):
        ds.set_epoch(epoch)  # keeps a loaded position when it is this epoch's
        for step, batch in enumerate(torch.utils.data.DataLoader(ds, batch_size=None)):
            loss = torch.nn.functional.cross_entropy(ddp(batch.images.float() / 255), batch.labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rank == 0 and step % 10 == 0:
                # every rank has taken the same number of steps, so rank 0's position is the job's
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "data": ds.state_dict()},
                           a.ckpt + ".tmp")
                os.replace(a.ckpt + ".tmp", a.ckpt)
                print(f"epoch {epoch} step {step} loss {loss.item():.3f} stats {ds.stats()}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
