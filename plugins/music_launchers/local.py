"""``local``: each variant a subprocess of this machine, at most N at a time, its output in its
own log file."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from music_core import progress
from music_core.contracts import Launcher, VariantJob


class LocalLauncher(Launcher):
    name = "local"
    description = "runs each variant as a process on this machine, N at a time (sweep.jobs)"

    def launch(self, jobs: list[VariantJob], parallel: int) -> list[int]:
        codes: dict[int, int] = {}
        running: dict[int, tuple[subprocess.Popen[Any], Any]] = {}
        pending = list(range(len(jobs)))
        task = progress.Task("sweep", total=len(jobs), unit="variants")
        try:
            while pending or running:
                while pending and len(running) < max(1, parallel):
                    i = pending.pop(0)
                    log = open(jobs[i].log, "ab")  # noqa: SIM115 (closed when the process ends)
                    running[i] = (subprocess.Popen(jobs[i].argv, cwd=jobs[i].cwd, env=jobs[i].env, stdout=log,
                                                   stderr=subprocess.STDOUT), log)
                    progress.log(f"[sweep] {jobs[i].name}: started")
                for i, (proc, log) in list(running.items()):
                    if proc.poll() is not None:
                        codes[i] = proc.returncode
                        log.close()
                        del running[i]
                        task.advance(1)
                        progress.log(f"[sweep] {jobs[i].name}: exited {proc.returncode}")
                time.sleep(0.2)
        finally:
            for proc, log in running.values():  # interrupted: the variants stop with the sweep
                proc.terminate()
                log.close()
            task.close()
        return [codes[i] for i in range(len(jobs))]
