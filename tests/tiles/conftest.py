"""Fixtures of the tiled fits' tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client():
    """An in-process Dask cluster of one worker (two threads) and its client."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c
