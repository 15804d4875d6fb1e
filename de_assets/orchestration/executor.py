"""Where a run's steps execute: in the run's own process (embedded), or on Celery workers (production).

Embedded: ``in_process_executor``. The multiprocess executor costs over a second per step on two
cores and the steps are I/O bound (README, "Executor").

Production: Dagster's ``dagster_celery.celery_executor`` with a Redis broker. What it does (read in
dagster-celery 0.29.27):

- The run's process (the orchestrator) keeps the execution plan and sends each ready step as one
  Celery task, ``execute_plan``, to the queue ``dagster`` (a step tagged ``dagster-celery/queue``
  goes to that queue instead). The task carries the job's *origin* (module and function, never the
  job itself) and a reference to the Dagster instance; the worker rebuilds the Definitions from its
  own environment, executes the step against the instance and returns the step's events.
- So the orchestrator and every worker share the instance (runs, events, pool slots: PostgreSQL via
  dagster-postgres across machines) and the tiers (the same ``DE_ASSETS_*`` settings), and workers run
  the same code.
- Pools are honoured: the orchestrator claims a pool slot from the instance before it sends a step and
  frees it when the step's events come back, so the ``hot_tier`` and ``source_db`` limits hold across
  all runs and workers (4 each on the production instance; tested at 1). Run-level tag limits (the
  run queue) do not depend on the executor. Celery priorities come from ``dagster-celery/priority``
  tags; ``dagster/priority`` has no effect here.

Nothing here reads the environment at import: :func:`load_celery_settings` is called by
``load_settings``; the broker URL may carry a password, so it reaches the executor as an
environment-variable reference and is never shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import dagster as dg

from de_assets.security.redaction import redact_url
from de_assets.settings import PRODUCTION, PROFILE, Setting, Settings, SettingsError

CELERY_BROKER_URL = "DE_ASSETS_CELERY_BROKER_URL"
# Where workers put step results for the orchestrator; the broker's URL when unset.
CELERY_BACKEND_URL = "DE_ASSETS_CELERY_BACKEND_URL"
# dagster-celery sends every step to this queue unless the step is tagged otherwise.
STEP_QUEUE = "dagster"
_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")
_BACKEND_SCHEMES = ("redis", "rediss", "rpc")


@dataclass(frozen=True)
class CelerySettings:
    """The broker and result backend, as the variables that hold them (their values are secrets)."""

    broker: Setting
    backend: Setting


def _url(env: Mapping[str, str], variable: str, schemes: tuple[str, ...]) -> Setting:
    raw = env.get(variable, "")
    if urlsplit(raw).scheme not in schemes:
        raise SettingsError(
            f"{variable} must be a Celery URL starting with {' or '.join(f'{s}://' for s in schemes)} "
            f"(e.g. redis://:***@host:6379/0); got {redact_url(raw)!r}"
        )
    # The value stays in the environment: the executor and workers read it when they start.
    return Setting(variable, "", from_env=True)


def load_celery_settings(env: Mapping[str, str]) -> CelerySettings | None:
    """The Celery settings when a broker is set, else None; raises :class:`SettingsError` on a bad URL."""
    if not env.get(CELERY_BROKER_URL):
        return None
    broker = _url(env, CELERY_BROKER_URL, _BROKER_SCHEMES)
    backend = _url(env, CELERY_BACKEND_URL, _BACKEND_SCHEMES) if env.get(CELERY_BACKEND_URL) else broker
    return CelerySettings(broker=broker, backend=backend)


def _required(settings: Settings) -> CelerySettings:
    if settings.profile != PRODUCTION:
        raise SettingsError(
            f"Celery workers run the production profile's steps; set {PROFILE}={PRODUCTION} (and the same "
            "settings as the processes that launch runs)"
        )
    if settings.celery is None:
        raise SettingsError(
            f"the production profile runs steps on Celery workers: set {CELERY_BROKER_URL} "
            f"(e.g. redis://:***@host:6379/0; {CELERY_BACKEND_URL} defaults to it)"
        )
    return settings.celery


def build_executor(settings: Settings) -> dg.ExecutorDefinition:
    """The executor the profile's jobs use (raises :class:`SettingsError` when production lacks a broker)."""
    if settings.profile != PRODUCTION:
        return dg.in_process_executor
    from dagster_celery import celery_executor

    celery = _required(settings)
    # {"env": ...}: Dagster resolves the URLs when the executor starts; the run config shows no URL.
    return celery_executor.configured(
        {"broker": {"env": celery.broker.variable}, "backend": {"env": celery.backend.variable}}
    )


def run_worker(
    settings: Settings, name: str, concurrency: int, queues: Sequence[str] = (STEP_QUEUE,)
) -> None:
    """Run a Celery worker for de_assets' steps in this process until it is told to stop (SIGTERM).

    It is dagster-celery's own worker app (the one ``celery -A dagster_celery.app worker`` starts),
    pointed at the broker and backend from the settings, so the URLs never appear on a command line
    or in a file.
    """
    from dagster_celery.app import app

    celery = _required(settings)
    app.conf.update(
        broker_url=dg.EnvVar(celery.broker.variable).get_value(),
        result_backend=dg.EnvVar(celery.backend.variable).get_value(),
    )
    argv = ["worker", "--hostname", f"{name}@%h", "--concurrency", str(concurrency)]
    # One task fetched at a time: a prefetched step would wait behind a long one on a busy worker.
    argv += ["--prefetch-multiplier", "1", "--loglevel", "INFO", "--queues", ",".join(queues)]
    app.worker_main(argv)
