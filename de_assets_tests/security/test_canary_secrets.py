"""Secrets given through the environment never show up anywhere.

Canary values stand for the two secrets the pipeline holds: the pseudonymisation key
(``DE_ASSETS_PII_KEY``) and a token in the alert webhook's URL (``DE_ASSETS_ALERT_WEBHOOK_URL``, here a
real HTTP receiver on 127.0.0.1). A whole lifecycle runs through the CLI with its verbose log, with the
clickstream contract broken on the last day so that the alert sensor, evaluated once afterwards with
the resources the Definitions bind, writes and POSTs an alert. Then neither canary may appear in what
was printed or logged, in any file under the home (every SQLite table of the Dagster instance: event
logs, runs with their config, snapshots; the hot and cold tiers; reports; alerts), or in the alert
bodies the webhook received. The key's fingerprint may appear; the token may only be in the URL
the POSTs went to.
"""

import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets

import pytest

from de_assets.cli import main
from de_assets.orchestration.alerts import ALERT_WEBHOOK
from de_assets.settings import ALERT_WEBHOOK_URL, HOME, PII_KEY, build_resources, load_settings
from de_assets_tests.security.alert_tick import tick_alert_sensor
from de_assets_tests.security.stored_text import found, tree_texts
from de_assets_tests.webhook_receiver import WebhookReceiver

PII_KEY_CANARY = ("c0ffee" * 7 + secrets.token_hex(11))[:64]  # 64 hex characters, as recommended
TOKEN_CANARY = f"canary-token-{secrets.token_hex(8)}"
CANARIES = (PII_KEY_CANARY, TOKEN_CANARY)


def _fingerprint(hex_key: str) -> str:
    """The 16 hex characters that may be shown for a key (computed here, not by the code under test)."""
    return hmac.new(bytes.fromhex(hex_key), b"de_assets key fingerprint", hashlib.sha256).hexdigest()[:16]


@pytest.fixture
def receiver():
    server = WebhookReceiver(TOKEN_CANARY)
    yield server
    server.close()


@pytest.fixture
def env(tmp_path, monkeypatch, receiver):
    for variable in [v for v in os.environ if v.startswith("DE_ASSETS_")] + ["DAGSTER_HOME"]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(HOME, str(tmp_path))
    monkeypatch.setenv(PII_KEY, PII_KEY_CANARY)
    monkeypatch.setenv(ALERT_WEBHOOK_URL, receiver.url)
    return tmp_path


def test_settings_and_resources_never_show_a_secret(env):
    settings = load_settings()
    shown = [("repr(settings)", repr(settings)), ("str(settings)", str(settings))]
    for name, resource in build_resources(settings).items():
        shown += [(f"repr({name})", repr(resource)), (f"str({name})", str(resource))]
    assert found(CANARIES, shown) == {}
    # The secret fields show as masked, whether they hold a value or the EnvVar naming it: the check
    # above looks where the values would be.
    assert "key='***'" in repr(build_resources(settings)["pii_key"])
    assert "url='***'" in repr(build_resources(settings)[ALERT_WEBHOOK])


def test_resources_as_a_step_receives_them_never_show_a_secret(env):
    # Initialised, every EnvVar is resolved: the values themselves are in the objects now.
    settings = load_settings()
    initialised = {
        name: r.process_config_and_initialize()
        for name, r in build_resources(settings).items()
        if hasattr(r, "process_config_and_initialize")
    }
    assert initialised["pii_key"].key == PII_KEY_CANARY  # the secret really is there
    shown = []
    for name, resource in initialised.items():
        shown += [(f"repr({name})", repr(resource)), (f"str({name})", str(resource))]
    assert found(CANARIES, shown) == {}


def test_canaries_appear_in_no_output_log_or_alert(env, receiver, capfd, caplog):
    home = env
    caplog.set_level(logging.DEBUG)
    today = dt.datetime.now(dt.UTC).date()
    first, last = today - dt.timedelta(days=4), today - dt.timedelta(days=2)
    argv = ["run", "-v", "--start", first.isoformat(), "--days", "3", "--orders-per-day", "100"]
    argv += ["--events-per-day", "400", "--schema-drift-day", last.isoformat()]
    assert main(argv) == 0
    tick_alert_sensor(home)
    out, err = capfd.readouterr()

    # Where the canaries were used: the alert went to the URL with the token, the tokens were made
    # with the key from the environment (no key file), and the run's log was printed (it names the
    # key by its fingerprint when registering it).
    assert receiver.posts
    assert {path for path, _body in receiver.posts} == {f"/hook?token={TOKEN_CANARY}"}
    assert not (home / "secrets" / "pii.key").exists()
    files = dict(tree_texts(home))
    assert found(
        [_fingerprint(PII_KEY_CANARY)],
        [("customers", files["hot/warehouse.duckdb:transformation.customers"])],
    )
    assert "data_contract" in files["alerts.jsonl"]
    assert f"registered pseudonymisation key {_fingerprint(PII_KEY_CANARY)}" in err
    texts = [
        ("stdout", out),
        ("stderr", err),
        ("log records", caplog.text),
        *((f"webhook body {n}", body.decode()) for n, (_path, body) in enumerate(receiver.posts)),
        *files.items(),
    ]
    assert found(CANARIES, texts) == {}
