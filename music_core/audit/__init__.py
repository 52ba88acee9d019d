"""``music audit``: is the rejected branch really worse? An auditor endpoint, independent of the
simulators, judges every synthetic pair in both orders, as a whole conversation and at each
contrasted turn, and is calibrated on pairs whose answer is known. :mod:`.verdicts` reads one
pair's verdicts, :mod:`.stats` turns records into rates with intervals, :mod:`.runner` does the
work resumably, :mod:`.report` writes what a person reads."""

from .runner import run_audit

__all__ = ["run_audit"]
