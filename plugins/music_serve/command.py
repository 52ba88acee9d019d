"""``music serve --rm NAME=PATH``: the reward server on uvicorn, with graceful shutdown on SIGTERM
(in-flight requests are answered, then the process exits 0)."""

from __future__ import annotations

import click

from music_core.cli import config_options


@click.command()
@click.option("--rm", "rms", multiple=True, required=True, metavar="NAME=PATH",
              help="a reward model to serve: any HF sequence-classification folder or hub id (repeatable)")
@click.option("--host", default="127.0.0.1", help="address to listen on")
@click.option("--port", default=8000, type=int, help="port")
@click.option("--max-wait-ms", default=5.0, type=float, help="how long a batch waits for more requests")
@click.option("--max-batch-tokens", default=16384, type=int, help="tokens in one scoring batch")
@click.option("--max-queue", default=2048, type=int, help="sequences waiting per model before requests get 429")
@click.option("--max-items", default=512, type=int, help="conversations or strings in one request (else 413)")
@click.option("--max-chars", default=2_000_000, type=int, help="characters in one request (else 413)")
@click.option("--max-body-mb", default=8.0, type=float, help="request body size (else 413)")
@click.option("--batch-size", default=16, type=int, help="sequences per padded forward pass (encoders)")
@config_options
def serve(rms, host, port, max_wait_ms, max_batch_tokens, max_queue, max_items, max_chars, max_body_mb, batch_size,
          config_path, overrides):
    """Serve reward models for RLHF: /v1/rewards (messages), /get_reward (OpenRLHF), /classify (vLLM, verl)."""
    import uvicorn

    from music_core.cli import load_cli_config
    from music_core.context import RunContext
    from music_core.errors import ConfigError
    from music_core.evaluation import load_scorer
    from music_core.packed import PackedScorer

    from .app import Limits, build_app

    DrainingServer = _draining_server()
    from .metrics import Metrics
    from .service import RewardService

    ctx = RunContext(load_cli_config(config_path, overrides))
    metrics = Metrics()
    services = {}
    for spec in rms:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--rm {spec!r}: expected NAME=PATH")
        scorer = load_scorer(ctx, path, batch_size)
        if isinstance(scorer, PackedScorer):  # else RewardService refuses it, naming the protocol
            scorer.tokens_per_batch = max_batch_tokens
        services[name] = RewardService(name, path, scorer, metrics, max_wait_s=max_wait_ms / 1000,
                                       max_batch_tokens=max_batch_tokens, max_items=max_queue)
    app = build_app(services, metrics, Limits(int(max_body_mb * 1024 * 1024), max_items, max_chars))
    click.echo(f"music serve: http://{host}:{port}/  models {', '.join(services)}; POST /v1/rewards, /get_reward, "
               f"/classify; GET /health, /metrics", err=True)
    DrainingServer(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)).run()


def _draining_server() -> type:
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        """SIGTERM stops accepting, answers what is in flight, drains the queues and exits 0 (a
        drained shutdown is a clean one; uvicorn would re-raise the signal)."""

        def handle_exit(self, sig: int, frame: object) -> None:
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)

    return Server

