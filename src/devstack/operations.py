"""Driving a running local stack as the cloud is driven: the weekly schedule, a run's row, waiting for a run
or its Slack digests, every message delivered twice, the dead letters, a switch of Cademi API."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import date
from typing import Any

from cademi_sim.admin import SimulatorAdmin
from devstack.emulators import pubsub_clients, push_subscription
from devstack.handle import StackHandle
from devstack.procs import StartupError
from devstack.wiring import FUNCTIONS, HTTP_FUNCTIONS, PROJECT, SCHEDULE_TOPIC
from progress_monitor.contracts.messages import ScheduleRequest
from progress_monitor.contracts.values import RunId


class StackOperations(StackHandle):
    """What tests and `make trigger` do with a stack once its processes run."""

    def admin(self) -> SimulatorAdmin:
        return SimulatorAdmin(self.endpoints["cademi_admin"]["port"], self.endpoints["cademi_admin"]["token"])

    def publish_schedule(self, request: ScheduleRequest | None = None) -> str:
        """Publish a schedule message, as Cloud Scheduler (an empty request) or an operator would."""
        publisher, _ = pubsub_clients(self.endpoints)
        data = (request or ScheduleRequest()).encode()
        message_id: str = publisher.publish(publisher.topic_path(PROJECT, SCHEDULE_TOPIC), data).result(timeout=30)
        return message_id

    def trigger(self, week: date, *, rerun: str | None = None, tag_ids: list[int] | None = None) -> RunId:
        """Set the simulator's clock to `week` and publish the weekly schedule message; returns the run id."""
        weeks = [d.isoformat() for d in self.scenario.weeks]
        if week.isoformat() not in weeks:
            raise ValueError(f"week {week} is not one of the scenario's weeks {weeks}")
        self.admin().set_week(week.isoformat())
        self.publish_schedule(
            ScheduleRequest(week=week, rerun=rerun, tag_ids=frozenset(tag_ids) if tag_ids is not None else None)
        )
        return RunId(week, rerun)

    def run_row(self, run_id: RunId) -> dict[str, Any] | None:
        """The run's row, or None (also while BigQuery is briefly unreachable, e.g. being restarted)."""
        from devstack.here import services_here
        from progress_monitor.errors import TransientError
        from progress_monitor.platform import warehouse

        try:
            rows = warehouse.query(services_here(), "SELECT * FROM `${runs}` WHERE run_id = @r", r=str(run_id))
        except TransientError:
            return None
        return rows[0] if rows else None

    def duplicate_deliveries(self, on: bool) -> None:
        """Every message delivered twice: a second push subscription per function topic (or remove them)."""
        from google.api_core import exceptions

        _, subscriber = pubsub_clients(self.endpoints)
        for name in FUNCTIONS:
            if on:
                with contextlib.suppress(exceptions.AlreadyExists):
                    subscriber.create_subscription(request=push_subscription(self.endpoints, name, "dup"))
            else:
                with contextlib.suppress(exceptions.NotFound):
                    path = subscriber.subscription_path(PROJECT, f"{name}-dup")
                    subscriber.delete_subscription(request={"subscription": path})

    def wait_run(
        self,
        run_id: RunId,
        timeout: float = 600.0,
        progress: Callable[[dict[str, Any] | None], None] | None = None,
        progress_every_s: float = 15.0,
    ) -> dict[str, Any]:
        """Poll the runs table until the run has failed, or finished (succeeded or incomplete) with its reports
        rebuilt (or the timeout passes)."""
        from progress_monitor.pipeline.runs import FINISHED

        deadline = time.monotonic() + timeout
        row: dict[str, Any] | None = None
        next_report = time.monotonic() + progress_every_s
        while time.monotonic() < deadline:
            if progress is not None and time.monotonic() >= next_report:
                progress(row)
                next_report += progress_every_s
            for child in self.children:
                if not child.alive():
                    raise StartupError(f"{child.name} died; see {child.log_path}")
            row = self.run_row(run_id)
            finished = row and row["status"] in FINISHED and row["reports_refreshed_at"]
            if row and (row["status"] == "failed" or finished):
                return row
            time.sleep(0.5)
        return row or {"run_id": str(run_id), "status": "missing"}

    def wait_digests(self, run_id: RunId, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Poll the digest records until every tutors' channel with data that week has this run's digest (posted,
        updated or refused); returns the records found."""
        from devstack.here import services_here
        from progress_monitor.errors import TransientError
        from progress_monitor.platform import warehouse
        from progress_monitor.tutors.digest import channel_digests

        settings = services_here()
        channels = set(channel_digests(settings, run_id.snapshot_date))
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                rows = warehouse.query(settings, "SELECT * FROM `${slack_digests}` WHERE run_id = @r", r=str(run_id))
            except TransientError:
                rows = []
            if {r["channel_id"] for r in rows} >= channels:
                return rows
            time.sleep(0.5)
        return rows

    def slack(self) -> Any:
        """A client of the local Slack stand-in."""
        from devstack.slack_standin import SlackStandin

        return SlackStandin(self.endpoints["slack"])

    def dead_letters(self, max_messages: int = 100) -> list[dict[str, Any]]:
        """Pull (and acknowledge) what reached every dead-letter topic."""
        _, subscriber = pubsub_clients(self.endpoints)
        found = []
        for dlq in (spec.dlq for spec in FUNCTIONS.values()):
            sub = subscriber.subscription_path(PROJECT, f"{dlq}-sub")
            # return_immediately: an empty dead-letter subscription must not block the summary.
            request = {"subscription": sub, "max_messages": max_messages, "return_immediately": True}
            response = subscriber.pull(request=request, timeout=10)
            ids = []
            for received in response.received_messages:
                found.append(
                    {
                        "topic": dlq,
                        "data": received.message.data.decode(errors="replace"),
                        "attributes": dict(received.message.attributes),
                    }
                )
                ids.append(received.ack_id)
            if ids:
                subscriber.acknowledge(request={"subscription": sub, "ack_ids": ids})
        return found

    def switch_cademi_api(self, version: str) -> None:
        """Redeploy, as a school switching APIs would: every function process restarts on `version`."""
        self.endpoints["cademi_api"] = version
        changes = {k: v for k, v in self.function_env().items() if k.startswith("CADEMI_")}
        changes["CADEMI_API_KEY"] = self.cademi_api_key
        for name in (*self.endpoints["processes"], *HTTP_FUNCTIONS):
            self.restart(name, self.port_of(name), changes)
        self.use_here()
