"""FSDP2 where accelerate does not shard: processes without a GPU.

accelerate turns an FSDP launch on CPUs into plain data parallelism (its FSDP plugin serves GPU
kinds only), while torch itself shards on CPUs: ``fully_shard`` over a gloo device mesh. So a
run launched with an FSDP config (``ACCELERATE_USE_FSDP=true``) on CPUs is sharded here: every
transformer layer, then the whole net, each its own FSDP2 unit, as accelerate's
TRANSFORMER_BASED_WRAP does on GPUs. The loop then feeds the sharded net itself (no DDP wrapper),
checkpoints gather the full model and optimizer state (``ShardedTrainingState``), and the export
is gathered from the shards like ZeRO-3's."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


def wanted(acc: Any) -> bool:
    """An FSDP launch that accelerate mapped to another strategy (CPU processes)."""
    return (acc.distributed_type.name == "MULTI_CPU" and acc.num_processes > 1
            and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true")


def shard(net: Any, world: int) -> Any:
    """Shard every transformer layer, then the rest of the net, across ``world`` CPU processes."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers.modeling_layers import GradientCheckpointingLayer

    mesh = init_device_mesh("cpu", (world,))
    for module in net.modules():
        if isinstance(module, GradientCheckpointingLayer):
            fully_shard(module, mesh=mesh)
    fully_shard(net, mesh=mesh)
    return net


@contextlib.contextmanager
def no_gradient_sync(net: Any, skip: bool) -> Iterator[None]:
    """Accumulate a micro-batch's gradients locally; the step's last micro-batch reduces them."""
    if not skip:
        yield
        return
    net.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        net.set_requires_gradient_sync(True)


def full_state(net: Any) -> dict[str, Any]:
    """The whole model's weights on the main process (every process takes part)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(net, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class ShardedTrainingState:
    """Model and optimizer state of a sharded run, for accelerate's save_state/load_state (as a
    registered custom object): saved gathered in full by the main process, loaded by every process
    from the same file and re-sharded, so a resumed run continues exactly."""

    def __init__(self, net: Any, optimizer: Any):
        self.net, self.optimizer = net, optimizer

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        model, optim = get_state_dict(self.net, self.optimizer,
                                      options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {"model": model, "optimizer": optim}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(self.net, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
