"""The whole system on one machine: emulators, the Cademi simulator and the functions, wired like the cloud.

Cloud Scheduler  -> a publish to `weekly-schedule` (what the scheduler job would send)
Pub/Sub push     -> functions-framework processes, with retry policies and dead-letter topics
Eventarc (GCS)   -> fake-gcs-server's Pub/Sub notifications on `shard-events`, pushed to load_history

This module starts the processes, in order (`LocalStack.start`); what is deployed and how it is wired is in
`wiring.py`, the emulators' binaries and set-up in `emulators.py`, the handle on a started stack in
`handle.py`, and driving it (trigger, wait_run, wait_digests, ...) in `operations.py`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from devstack import emulators
from devstack.operations import StackOperations
from devstack.procs import Child, free_port, spawn, start_simulator, wait_for_http, wait_for_port
from devstack.wiring import (
    FUNCTIONS,
    HTTP_FUNCTIONS,
    LOCAL_SLACK_TEAM,
    LOCAL_SLACK_USER,
    LOCAL_STAFF,
    PROJECT,
    PUSHER,
    RECORDER,
    SHARD_EVENTS_TOPIC,
    SIM_ADMIN_TOKEN,
    function_source,
)


class LocalStack(StackOperations):
    """A local stack: started here, or attached to from another process (`StackHandle.attach`)."""

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
        sources: dict[str, Path] | None = None,
    ) -> LocalStack:
        """Start every process, create topics, bucket, tables and subscriptions, seed the registry.

        `cademi_api` ("v1" or "v3") is the Cademi API the functions use; the simulator serves both.
        `incremental` ("on" or "off") is the functions' INCREMENTAL: whether extraction carries inactive students.
        `sources` gives a function (by its folder under functions/) another source file in place of its
        main.py: the soak's fault wrapper (`devstack.soak_faults`); production code carries no test hook.

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
            stack._start(
                piece_budget_s, capacity, front_queue_s, ack_deadline_s, extra_env or {}, cademi_api, sources or {}
            )
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
        sources: dict[str, Path],
    ) -> None:
        scenario = self.scenario
        logs = self.workdir / "logs"
        gcs_root = self.workdir / "gcs"
        gcs_root.mkdir(exist_ok=True)
        ports = {
            name: free_port()
            for name in ("pubsub", "push_relay", "gcs", "bq", "bq_grpc", "slack", RECORDER, *FUNCTIONS, *HTTP_FUNCTIONS)
        }
        # The processes ("instances") of each pushed function, behind its front on ports[name].
        capacity = {**capacity, RECORDER: (1, 2)}
        instances = {
            name: [name if i == 0 else f"{name}#{i + 1}" for i in range(capacity[name][0])]
            for name in (*FUNCTIONS, RECORDER)
        }
        process_ports = {process: free_port() for names in instances.values() for process in names}
        self.endpoints = {
            "cademi_api": cademi_api,
            "incremental": self.incremental,
            "project": PROJECT,
            "dataset": "progress",
            "bucket": "progress-shards",
            "state_bucket": "progress-state",
            "pubsub": f"127.0.0.1:{ports['pubsub']}",
            # Pub/Sub's pushes go through it: it adds the ID token their subscription declares (push_auth.py).
            "push_relay": f"http://127.0.0.1:{ports['push_relay']}",
            "gcs": f"http://127.0.0.1:{ports['gcs']}",
            "bigquery": f"http://127.0.0.1:{ports['bq']}",
            "gcs_root": str(gcs_root),
            "slack": f"http://127.0.0.1:{ports['slack']}",
            # What Pub/Sub pushes to (a pushed function's front) or what a browser calls (the HTTP ones).
            "functions": {name: f"http://127.0.0.1:{ports[name]}" for name in (*FUNCTIONS, *HTTP_FUNCTIONS, RECORDER)},
            "processes": {process: f"http://127.0.0.1:{port}" for process, port in process_ports.items()},
        }

        emulator = str(emulators.pubsub_emulator_script())
        pubsub = spawn("pubsub-emulator", [emulator, "--host=127.0.0.1", f"--port={ports['pubsub']}"], logs)
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
            env={
                **os.environ,
                "HOME": str(emulators.bqemulator_home(self.workdir)),
                "BQEMU_GCS_LOCAL_ROOT": str(gcs_root),
            },
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
        emulators.create_topics(self.endpoints)
        relay = [sys.executable, "-m", "devstack.push_auth", "--port", str(ports["push_relay"])]
        relay += ["--pubsub", self.endpoints["pubsub"]]
        self.children.append(spawn("push-relay", relay, logs, env=dict(os.environ)))
        gcs = spawn(
            "fake-gcs-server",
            [
                str(emulators.fake_gcs_binary()),
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
                # as Eventarc's trigger: objects finalized in the shards bucket only (not the state bucket's)
                "-event.bucket",
                self.endpoints["bucket"],
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
        self.use_here()
        emulators.prepare_storage_and_tables(self.scenario)
        lanes = capacity["extract_progress"][0] * capacity["extract_progress"][1]
        env.setdefault("EXTRACTION_LANES", str(lanes))  # as Terraform sets it: the extraction capacity
        self.endpoints["function_env"]["EXTRACTION_LANES"] = env["EXTRACTION_LANES"]

        def function_process(name: str, folder: str, target: str, signature: str, port: int, threads: int) -> Child:
            command = [
                str(Path(sys.executable).parent / "functions-framework"),
                "--source",
                str(sources.get(folder) or function_source(folder)),
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

        for name in (*FUNCTIONS, RECORDER):
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
                *("--invoker", PUSHER),  # the one identity Terraform lets invoke the pushed functions
            ]
            front += [arg for process in instances[name] for arg in ("--backend", self.endpoints["processes"][process])]
            self.children.append(spawn(f"front-{name}", front, logs, env=dict(os.environ)))
        for name, (folder, target) in HTTP_FUNCTIONS.items():
            self.children.append(function_process(name, folder, target, "http", ports[name], 4))
        for process, port in process_ports.items():
            wait_for_port(self.child(process), port)
        for name in (*FUNCTIONS, RECORDER):
            wait_for_port(self.child(f"front-{name}"), ports[name])
        for name in HTTP_FUNCTIONS:
            wait_for_port(self.child(name), ports[name])
        wait_for_port(self.child("push-relay"), ports["push_relay"])
        wait_for_port(slack, ports["slack"])
        self.endpoints["ack_deadline_s"] = ack_deadline_s
        emulators.create_subscriptions(self.endpoints)
        self.save()


def remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
