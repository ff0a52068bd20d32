"""Lease mode: inference and ETL jobs that keep draining when workers die or join.

    ds = mx8.LeaseDataset("data/train-mx8@sha256:...", job="embed", batch_size=256, size=224,
                          log="s3://bucket/jobs/embed/log/")
    for batch in ds:
        sink.write(batch.sample_ids, model(batch.images))   # idempotent by sample id
        ds.ack(batch)

See docs/leases.md for the guarantees, their limits and the configuration.
"""
from .coordinator import Coordinator, Lease
from .dataset import LeaseDataset, LeaseInfo
from .log import LeaseLog, plan_ranges
from .pacing import Pacer
from .store import host_store, open_store

__all__ = ["LeaseDataset", "LeaseInfo", "LeaseLog", "Coordinator", "Lease", "Pacer", "plan_ranges",
           "host_store", "open_store"]
