"""``submitit``: the variants as one SLURM job array through submitit (the scheduler research clusters run,
and what Hydra's submitit launcher uses). ``cluster: local`` runs the same jobs with submitit's
local executor, on this machine."""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


FAILED = 1  # the status booked for a job the scheduler lost: killed, timed out, preempted too often


class VariantRunner:
    """What each array task does: the variant's ``music run``, its output in its log, holding one
    of ``parallel`` slots (a file lock beside the jobs) so that ``sweep.jobs`` holds on any
    executor. ``checkpoint`` is submitit's preemption hook: the variant resumes from its own
    output folder, so a preempted task is simply submitted again (as Hydra's launcher does)."""

    def __init__(self, slots_dir: str, parallel: int):
        self.slots_dir, self.parallel = slots_dir, max(1, parallel)

    def __call__(self, job: VariantJob) -> int:
        with self._slot(), open(job.log, "ab") as log:
            return subprocess.run(job.argv, cwd=job.cwd, env=job.env, stdout=log, stderr=subprocess.STDOUT).returncode

    def checkpoint(self, job: VariantJob) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, job)

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        Path(self.slots_dir).mkdir(parents=True, exist_ok=True)
        while True:
            for k in range(self.parallel):
                fh = open(Path(self.slots_dir) / f"slot-{k}.lock", "w")
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    fh.close()
                    continue
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
                    fh.close()
                return
            time.sleep(0.5)


class SubmititLauncher(Launcher):
    name = "submitit"
    options_class = SubmititOptions
    description = "submits the variants as one SLURM job array through submitit (cluster: local runs them here)"

    def launch(self, jobs: list[VariantJob], parallel: int) -> list[int]:
        """One array for all variants (``map_array``), at most ``parallel`` running at once
        (SLURM's array parallelism, and a slot lock on every executor); a task the scheduler
        killed or timed out is booked as failed, never raised."""
        import submitit

        o = self.opts
        executor = submitit.AutoExecutor(folder=o.folder, cluster=o.cluster)
        params: dict[str, Any] = {"timeout_min": o.timeout_min, "cpus_per_task": o.cpus_per_task, "mem_gb": o.mem_gb}
        if executor.cluster == "slurm":
            params.update(slurm_partition=o.partition, gpus_per_node=o.gpus_per_node,
                          slurm_additional_parameters=dict(o.additional_parameters), slurm_array_parallelism=parallel)
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        slots = str(Path(o.folder.split("%j")[0].rstrip("/") or ".") / "slots")
        submitted = executor.map_array(VariantRunner(slots, parallel), jobs)
        return [_status(s, job) for s, job in zip(submitted, jobs)]


def _status(submitted: Any, job: VariantJob) -> int:
    import submitit

    try:
        return int(submitted.result())
    except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as exc:
        with open(job.log, "a", encoding="utf-8") as log:  # say why in the variant's own log
            log.write(f"\nmusic sweep: job {submitted.job_id} did not complete: {str(exc).splitlines()[0]}\n")
        return FAILED
