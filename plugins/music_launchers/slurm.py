"""``submitit``: each variant a SLURM job through submitit (the scheduler research clusters run,
and what Hydra's submitit launcher uses). ``cluster: local`` runs the same jobs with submitit's
local executor, on this machine."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

from music_core.config import options
from music_core.config.schema import OptionError, option
from music_core.contracts import Launcher, VariantJob


@dataclass
class SubmititOptions:
    """``sweep.launcher_options`` of the submitit launcher."""

    folder: str = option("runs/.submitit/%j", "where submitit keeps each job's files (%j: the job id)")
    cluster: str | None = option(None, "slurm, local or debug (default: slurm where sbatch exists, else local)")
    partition: str | None = option(None, "SLURM partition")
    timeout_min: int = option(24 * 60, "a job's time limit in minutes")
    gpus_per_node: int = option(0, "GPUs for each variant")
    cpus_per_task: int = option(4, "CPUs for each variant")
    mem_gb: int = option(32, "memory for each variant")
    additional_parameters: dict[str, Any] = option({}, "other sbatch parameters (submitit's slurm_additional_parameters)")

    def __post_init__(self) -> None:
        if self.cluster not in (None, "slurm", "local", "debug"):
            raise OptionError("cluster", "must be slurm, local or debug")


def run_variant(job: VariantJob) -> int:
    """What each submitted job does: the variant's ``music run``, its output in its log."""
    with open(job.log, "ab") as log:
        return subprocess.run(job.argv, cwd=job.cwd, env=job.env, stdout=log, stderr=subprocess.STDOUT).returncode


class SubmititLauncher(Launcher):
    name = "submitit"
    options_class = SubmititOptions
    description = "submits each variant as a SLURM job through submitit (cluster: local runs them here)"

    def __init__(self, opts: Any = None, ctx: Any = None):
        super().__init__(opts, ctx)
        self.opts = options(SubmititOptions, opts, "sweep.launcher_options")

    def launch(self, jobs: list[VariantJob], parallel: int) -> list[int]:
        import submitit

        o = self.opts
        executor = submitit.AutoExecutor(folder=o.folder, cluster=o.cluster)
        params: dict[str, Any] = {"timeout_min": o.timeout_min, "cpus_per_task": o.cpus_per_task, "mem_gb": o.mem_gb}
        if executor.cluster == "slurm":
            params.update(slurm_partition=o.partition, gpus_per_node=o.gpus_per_node,
                          slurm_additional_parameters=dict(o.additional_parameters), slurm_array_parallelism=parallel)
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        submitted = [executor.submit(run_variant, job) for job in jobs]
        return [int(s.result()) for s in submitted]
