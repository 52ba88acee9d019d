"""Test helpers that plugins and third parties can use: a loopback HTTP server with latency
and fault injection. Provider plugins put their vendor's REST dialect on top of it."""

from .loopback import FaultPlan, LoopbackServer, Request, Response

__all__ = ["FaultPlan", "LoopbackServer", "Request", "Response"]
