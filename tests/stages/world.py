"""The pipeline in one process, for the stage and feature tests: the real stages and clients on in-process
services, with the deliveries the cloud makes done by hand, one at a time, in the order a test chooses.

- BigQuery: bqemulator's server on a thread of this process (a real REST endpoint, the real client).
- Cloud Storage: fake-gcs-server (a Go binary: one small process per session), the real client.
- Cademi: the simulator's HTTP server on a thread; Slack: the stand-in's on another.
- Pub/Sub: a recording publisher (no emulator adds truth to "what was published"); `World.deliver` hands each
  published message to its function as a CloudEvent, as a push subscription would, and `World.finalize` an
  object's finalize event to load_history, as Eventarc would.
- The clock is pinned: `World.at(...)`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from cloudevents.http import CloudEvent
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import (
    bigquery,
    storage,  # type: ignore[attr-defined]
)

from cademi_sim.scenario import Scenario, load
from cademi_sim.server import SimServer
from cademi_sim.state import SimState
from devstack import emulators
from devstack.procs import Child, free_port, spawn, wait_for_port
from devstack.slack_standin import StandinServer, State
from progress_monitor.cademi.ratelimit import RateLimiter
from progress_monitor.contracts.messages import DigestTask, Message, ProgressTask
from progress_monitor.pipeline import reporting
from progress_monitor.platform import warehouse
from progress_monitor.services import Services
from progress_monitor.settings import Settings
from progress_monitor.stages import extract, schedule
from progress_monitor.stages import load as load_stage
from progress_monitor.tutors import worker

PROJECT = "local-project"
ADMIN_TOKEN = "stages-admin"
SLACK_TOKEN = "xoxb-stages"
worlds = itertools.count(1)


# -- the servers, one per session -------------------------------------------------------------------------------


for noisy in ("bqemulator", "uvicorn", "uvicorn.access", "uvicorn.error"):  # every request at INFO
    logging.getLogger(noisy).setLevel(logging.WARNING)


class ThreadedBigQuery:
    """bqemulator's server on a thread with its own event loop: the real REST API, in this process."""

    def __init__(self, home: Path, gcs_root: Path) -> None:
        from bqemulator.config import Settings as EmulatorSettings
        from bqemulator.server import EmulatorServer

        self.server = EmulatorServer(
            EmulatorSettings(rest_port=0, grpc_port=0, project=PROJECT, gcs_local_root=gcs_root)
        )
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self.server.start())
            except BaseException as exc:  # surfaced below, in the caller's thread
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        # DuckDB finds its spatial extension under $HOME at start (devstack.emulators.bqemulator_home).
        saved = os.environ.get("HOME")
        os.environ["HOME"] = str(home)
        try:
            self._thread = threading.Thread(target=run, name="bqemulator", daemon=True)
            self._thread.start()
            if not started.wait(60) or failure:
                raise RuntimeError(f"bqemulator did not start: {failure}")
        finally:
            if saved is not None:
                os.environ["HOME"] = saved
        self.url = f"http://127.0.0.1:{self.server._rest_port}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@dataclass
class Servers:
    bigquery: ThreadedBigQuery
    gcs: Child
    gcs_url: str
    gcs_root: Path

    @classmethod
    def start(cls, root: Path) -> Servers:
        gcs_root = root / "gcs"
        gcs_root.mkdir(parents=True)
        port = free_port()
        gcs = spawn(
            "fake-gcs-server",
            [
                *(str(emulators.fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
                *("-backend", "filesystem", "-filesystem-root", str(gcs_root), "-log-level", "warn"),
            ],
            root / "logs",
        )
        wait_for_port(gcs, port)
        bq = ThreadedBigQuery(emulators.bqemulator_home(root), gcs_root)
        return cls(bq, gcs, f"http://127.0.0.1:{port}", gcs_root)

    def stop(self) -> None:
        self.bigquery.stop()
        self.gcs.stop()


def serve(server: Any) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


# -- Pub/Sub as the functions see it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    topic: str
    data: bytes
    attributes: dict[str, str]
    message_id: str


@dataclass
class RecordingPublisher:
    """The two methods of pubsub_v1.PublisherClient that Services uses; every message kept, in order."""

    messages: list[Published] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def topic_path(self, project: str, topic: str) -> str:
        return f"projects/{project}/topics/{topic}"

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]:
        with self._lock:
            message_id = str(len(self.messages) + 1)
            self.messages.append(Published(topic.rsplit("/", 1)[-1], data, attributes, message_id))
        done: Future[str] = Future()
        done.set_result(message_id)
        return done


def pushed(message: Published, publish_time: datetime) -> CloudEvent:
    """A push delivery of `message`, as functions-framework hands it to a CloudEvent function."""
    body = {
        "message": {
            "data": base64.b64encode(message.data).decode(),
            "attributes": message.attributes,
            "messageId": message.message_id,
            "publishTime": publish_time.isoformat().replace("+00:00", "Z"),
        },
        "subscription": f"projects/{PROJECT}/subscriptions/{message.topic}-push",
    }
    attributes = {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": f"//pubsub/{message.topic}"}
    return CloudEvent(attributes, body)


def finalized(bucket: str, blob: storage.Blob) -> CloudEvent:
    """Eventarc's finalize event for `blob`."""
    data = {"bucket": bucket, "name": blob.name, "generation": str(blob.generation)}
    attributes = {"type": "google.cloud.storage.object.v1.finalized", "source": f"//storage/{bucket}"}
    return CloudEvent(attributes, data)


def monday_noon(week: date) -> datetime:
    """A weekly run's time: noon UTC of its Monday (09:00 in São Paulo)."""
    return datetime.combine(week, time(12), UTC)


# -- one school's world --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One job as BigQuery's job history keeps it (jobs.list, INFORMATION_SCHEMA.JOBS: about 180 days)."""

    kind: str  # "query", "load", ...
    sql: str
    parameters: tuple[str, ...]  # every parameter value as sent (an array's elements one by one)
    target: str  # the destination table's id, when the job names one

    def values(self) -> list[str]:
        """What the job keeps that is not a name: its parameters and its SQL without the quoted table ids (a
        staging table's random suffix may hold any digits)."""
        return [*self.parameters, re.sub(r"`[^`]*`", "``", self.sql)]


@dataclass
class JobHistory:
    """The jobs a world's client submits, as the cloud keeps them: the emulator keeps a job's SQL but not its
    parameters, so the job requests are recorded as the real client sends them (jobs.insert and jobs.query, and
    the configuration a load from a file sends when its upload starts)."""

    jobs: list[Job] = field(default_factory=list)
    read: int = 0  # jobs `new` already returned

    def attach(self, client: bigquery.Client) -> None:
        send = client._connection.api_request

        def api_request(*args: Any, **kwargs: Any) -> Any:
            method = kwargs.get("method") or (args[0] if args else "")
            path, data = kwargs.get("path") or (args[1] if len(args) > 1 else ""), kwargs.get("data")
            if method == "POST" and str(path).endswith(("/jobs", "/queries")) and isinstance(data, dict):
                self.jobs.append(_job(data))
            return send(*args, **kwargs)

        client._connection.api_request = api_request
        for upload in ("_do_resumable_upload", "_do_multipart_upload"):
            start = getattr(client, upload)

            def started(stream: Any, metadata: Any, *args: Any, _start: Any = start, **kwargs: Any) -> Any:
                self.jobs.append(_job(dict(metadata)))
                return _start(stream, metadata, *args, **kwargs)

            setattr(client, upload, started)

    def new(self) -> list[Job]:
        """The jobs submitted since the last call."""
        found, self.read = self.jobs[self.read :], len(self.jobs)
        return found


def _job(request: dict[str, Any]) -> Job:
    configuration = request.get("configuration", {"query": request})  # jobs.query's body is the query itself
    kind = next((k for k in ("query", "load", "copy", "extract") if k in configuration), "")
    query = configuration.get("query", {})
    target = configuration.get(kind, {}).get("destinationTable", {}).get("tableId", "")
    values: list[str] = []
    for parameter in query.get("queryParameters", []):
        value = parameter.get("parameterValue", {})
        values += [str(v.get("value")) for v in value.get("arrayValues", [])]
        if "value" in value:
            values.append(str(value["value"]))
    return Job(kind, str(query.get("query", "")), tuple(values), str(target))


@dataclass
class World:
    """One school (a scenario) on the session's servers: its own datasets, buckets, simulator and Slack."""

    svc: Services
    env: dict[str, str]  # the environment its Settings were read from (an operator command run on this world)
    gcs_files: tuple[Path, ...]  # where fake-gcs-server keeps this world's buckets (shards, state) on disk
    scenario: Scenario
    sim: SimState
    slack: State
    publisher: RecordingPublisher
    delivered: int = 0  # messages of `publisher` already handed to their function
    loaded: dict[str, int] = field(default_factory=dict)  # object name -> generation already finalized
    jobs: JobHistory = field(default_factory=JobHistory)  # what BigQuery's job history keeps of its jobs
    _stop: list[Callable[[], None]] = field(default_factory=list)

    @property
    def cfg(self) -> Settings:
        return self.svc.cfg

    def at(self, when: datetime) -> None:
        """Pin the clock every stage reads (svc.now())."""
        self.svc = replace(self.svc, clock=lambda: when)

    def week(self, index: int) -> None:
        """The simulator serves week `index` of the scenario."""
        with self.sim.lock:
            self.sim.week = index

    def publish(self, message: Message) -> None:
        self.svc.send(message)

    def handlers(self) -> dict[str, Callable[[Any, Services], Any]]:
        cfg = self.cfg
        return {
            cfg.schedule_topic: schedule.handle_schedule,
            cfg.progress_topic: extract.handle_progress_task,
            cfg.slack_tasks_topic: worker.handle_slack_task,
            cfg.shard_reloads_topic: load_stage.handle_shard_event,  # a lost finalize event, sent again
        }

    def deliver(self, skip: Callable[[Published], bool] = lambda m: False) -> list[Published]:
        """Push every message published since the last call to its function, in order, until none is left;
        messages for topics no function here takes (dead-letter topics) and those `skip` names are left."""
        handled: list[Published] = []
        while self.delivered < len(self.publisher.messages):
            message = self.publisher.messages[self.delivered]
            self.delivered += 1
            handler = self.handlers().get(message.topic)
            if handler is None or skip(message):
                continue
            handler(pushed(message, self.svc.now()), self.svc)
            handled.append(message)
        return handled

    def finalize(self, prefix: str = "") -> list[str]:
        """Hand load_history every object written or rewritten in the shards bucket since the last call (Eventarc's
        finalize: its trigger names that bucket alone)."""
        done = []
        for blob in sorted(self.svc.shards.list_blobs(prefix=prefix), key=lambda b: b.name):
            if self.loaded.get(blob.name) == blob.generation:
                continue
            self.loaded[blob.name] = blob.generation
            load_stage.handle_shard_event(finalized(self.svc.shards.name, blob), self.svc)
            done.append(blob.name)
        return done

    def run_week(self, index: int, rerun: str | None = None) -> None:
        """A weekly run as the cloud makes it: the schedule, every task, every shard, the digests."""
        from progress_monitor.contracts.messages import ScheduleRequest

        self.week(index)
        self.at(monday_noon(self.scenario.weeks[index]))
        self.publish(ScheduleRequest(week=self.scenario.weeks[index], rerun=rerun))
        while self.deliver() or self.finalize():
            pass

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        return warehouse.query(self.svc, sql, **params)

    def sent(self, kind: type[Message]) -> list[Any]:
        topic = getattr(self.cfg, kind.TOPIC)
        return [kind.from_json(json.loads(m.data)) for m in self.publisher.messages if m.topic == topic]

    def close(self) -> None:
        for stop in reversed(self._stop):
            stop()


def open_world(servers: Servers, scenario_path: Path, *, incremental: str = "off", **overrides: str) -> World:
    """A world for the scenario at `scenario_path`: datasets and a bucket of its own, tables, views and the
    registry seeded as devstack does, a simulator and a Slack stand-in on threads of this process."""
    n = next(worlds)
    scenario = load(scenario_path)
    sim = SimState(scenario, ADMIN_TOKEN, week=0)
    sim_server = SimServer(sim, 0)
    serve(sim_server)
    slack_dir = scenario_path.parent / f"slack-{n}"
    slack = State(SLACK_TOKEN, slack_dir)
    slack_server = StandinServer(0, slack)
    serve(slack_server)
    env = {
        "GCP_PROJECT": PROJECT,
        "BQ_DATASET": f"w{n}_progress",
        "BQ_RESTRICTED_DATASET": f"w{n}_progress_restricted",
        "BQ_SLACK_DATASET": f"w{n}_progress_slack",
        "SHARDS_BUCKET": f"shards-{n}",
        "STATE_BUCKET": f"state-{n}",
        "BIGQUERY_EMULATOR_HOST": servers.bigquery.url,
        "STORAGE_EMULATOR_HOST": servers.gcs_url,
        "CADEMI_BASE_URL": f"http://127.0.0.1:{sim_server.server_address[1]}/api/v1",
        "CADEMI_API_KEY": scenario.api_key,
        "CADEMI_RATE_PER_SECOND": "1000",
        "CADEMI_RATE_PER_MINUTE": "60000",
        "CADEMI_BACKOFF_BASE_S": "0.01",
        "CADEMI_BACKOFF_CAP_S": "0.05",
        "SLACK_API_URL": f"http://127.0.0.1:{slack_server.server_address[1]}/api",
        "SLACK_RESPONSE_URL_PREFIX": f"http://127.0.0.1:{slack_server.server_address[1]}/response/",
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SECRETS_BACKEND": "env",
        "PRIVACY_KEY": "stages-privacy-key",
        "INCREMENTAL": incremental,
        "PIECE_BUDGET_S": "60",
        **overrides,
    }
    cfg = Settings.from_env(env)
    bq = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=servers.bigquery.url),
    )
    gcs = storage.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=servers.gcs_url),
    )
    shards, state = gcs.create_bucket(cfg.shards_bucket), gcs.create_bucket(cfg.state_bucket)
    publisher = RecordingPublisher()
    budget = RateLimiter(cfg.cademi_rate_per_second, cfg.cademi_rate_per_minute, cfg.cademi_rate_safety)
    first = monday_noon(scenario.weeks[0])
    svc = Services(cfg, bq, gcs, shards, state, publisher, budget, clock=lambda: first)  # type: ignore[arg-type]
    warehouse.ensure_tables(svc)
    reporting.create_deployed_views(svc)
    emulators.seed_registry(svc, scenario)
    files = (servers.gcs_root / cfg.shards_bucket, servers.gcs_root / cfg.state_bucket)
    world = World(svc, env, files, scenario, sim, slack, publisher)
    world.jobs.attach(bq)
    world._stop += [sim_server.shutdown, slack_server.shutdown]
    return world


@contextlib.contextmanager
def world_of(servers: Servers, tmp: Path, school: dict[str, Any], **options: Any) -> Iterator[World]:
    path = tmp / "scenario.json"
    path.write_text(json.dumps(school))
    world = open_world(servers, path, **options)
    try:
        yield world
    finally:
        world.close()


__all__ = ["DigestTask", "ProgressTask", "Servers", "World", "open_world", "world_of"]
