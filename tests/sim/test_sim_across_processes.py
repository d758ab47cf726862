"""A workload and a cluster cross a process boundary intact: `tune`'s workers, `plan`'s
option pool and Ray tasks receive them pickled (always under Ray; under the `spawn` and
`forkserver` start methods that macOS and Python 3.14 use for process pools)."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from types import MappingProxyType

import pytest

from selfserve.engine.config import EngineConfig
from selfserve.sim import SLO, ClusterSpec, simulate
from selfserve.workload.embedded import load_embedded
from selfserve.workload.request import MediaPart, Request, Workload

CLUSTER = "2xh200/llama-3.1-8b:max_num_batched_tokens=2048"


def test_a_request_keeps_every_field_and_read_only_tags_through_pickle():
    request = Request(
        "r1",
        1.5,
        300,
        20,
        block_hashes=(7, 8),
        session_id="s",
        turn=2,
        think_time_s=0.5,
        media=(MediaPart("image", 64, 99, pixels=1024),),
        tags=MappingProxyType({"tenant": "a"}),
    )
    back = pickle.loads(pickle.dumps(request))
    assert back == request
    assert isinstance(back.tags, MappingProxyType) and back.tags["tenant"] == "a"
    with pytest.raises(TypeError):
        back.tags["tenant"] = "b"  # still read-only


def test_engine_config_and_cluster_overrides_survive_pickle():
    config = EngineConfig(max_num_seqs=3, num_gpu_blocks_override=7)
    assert pickle.loads(pickle.dumps(config)) == config
    cluster = ClusterSpec.parse(CLUSTER)
    back = pickle.loads(pickle.dumps(cluster))
    assert back == cluster
    assert back.groups[0].engine.max_num_batched_tokens == 2048


def _completed(workload, cluster) -> int:
    return simulate(workload, cluster, "lmetric", slo=SLO.parse("ttft=10s")).summary()["completed"]


def test_a_spawned_worker_simulates_the_same_workload_as_this_process():
    workload = load_embedded("mooncake-conversation-10min")
    workload = Workload(workload.requests[:60], workload.name, block_size=workload.block_size)
    cluster = ClusterSpec.parse(CLUSTER)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        remote = pool.submit(_completed, workload, cluster).result(timeout=120)
    assert remote == _completed(workload, cluster) == 60
