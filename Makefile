# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
WEEKS ?= 4
WEEK ?=
TAG ?=
FROM ?=
TO ?=
SCENARIO ?=
PYTEST_ARGS ?=

.PHONY: install lint unit stages test run up trigger down replay reextract export-tutors privacy-export privacy-erase looker-url bench soak clean

# uv installs the locked versions side by side (about 10 s where pip took 45 s on this 2-core machine). The
# project's venv compiles the bytecode at install, as pip did (without it every test process compiles what it
# imports first); the tool venvs do not (checkov runs once; of the schema bindings only the data is read).
UV_VERSION := 0.13.9
UV_INSTALL = $(1)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION) && \
	$(1)/bin/uv pip install -q $(2) --python $(1)/bin/python

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(call UV_INSTALL,$(VENV),--compile-bytecode) -r requirements.lock
	$(call UV_INSTALL,$(VENV),--compile-bytecode) --no-deps -e .
	touch $@

# Debian's Chromium for the browser test of the add_tag form (Playwright drives it; no browser download).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

install: $(VENV)/.installed

# checkov lives in its own virtualenv: it ships an `hcl2` module that shadows python-hcl2.
CHECKOV := .venv-checkov/bin/checkov
$(CHECKOV):
	$(PY) -m venv .venv-checkov
	$(call UV_INSTALL,.venv-checkov) checkov==3.3.30

# The providers' schemas, offline: the prebuilt CDK bindings carry them (their jsii assemblies); only the
# data is used, so no jsii runtime is installed. Release 21.1.0 is built from google provider 8.7.0, the
# version infra/terraform/versions.tf pins; time 14.0.2 from time 0.14.2, archive 14.0.1 from archive 2.8.1.
# The same venv runs the stand-in provider with which Terraform plans infra/terraform (tests/tf_standin/):
# the `tf` package brings the plugin protocol's generated bindings, grpcio, msgpack and cryptography.
TFSCHEMA := .venv-tfschema/provider-schema.json
STANDIN_SCHEMAS := .venv-tfschema/standin-schemas.json
$(TFSCHEMA): tests/tf_schema.py tests/tf_standin/schema.py
	$(PY) -m venv .venv-tfschema
	$(call UV_INSTALL,.venv-tfschema) --no-deps cdktn-provider-google==21.1.0 cdktn-provider-google-beta==21.1.0 \
		cdktn-provider-time==14.0.2 cdktn-provider-archive==14.0.1
	$(call UV_INSTALL,.venv-tfschema) tf==1.2.0 grpcio==1.85.4 protobuf==5.29.6 msgpack==1.2.4 cryptography==51.0.1
	$(PY) tests/tf_schema.py build .venv-tfschema $@
	$(PY) -m tests.tf_standin.schema .venv-tfschema $(STANDIN_SCHEMAS)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

lint: install
	$(BIN)/ruff check src tests functions
	$(BIN)/ruff format --check src tests functions
	$(BIN)/mypy

# The pure tests alone: no network, no emulator, about ten seconds (docs/development.md#tests).
unit: install
	$(BIN)/pytest -q tests/unit

# The stages and features in process (bqemulator on a thread, fake-gcs-server, no stack): a few minutes.
stages: install
	$(BIN)/pytest -q $(XDIST) tests/stages

# pytest-xdist: two workers (one per core), each module whole on one worker (a module shares its stack), the
# longest modules first (tests/conftest.py). Not loadgroup: with pytest 9 its groups are silently ignored.
XDIST := -n 2 --dist loadscope --no-loadscope-reorder

# The virtualenvs, Chromium and the lint are independent of one another: made side by side on a fresh machine.
test:
	$(MAKE) --no-print-directory -j4 lint $(CHROMIUM) $(CHECKOV) $(TFSCHEMA)
	$(BIN)/pytest $(XDIST) --durations=20 $(PYTEST_ARGS)

run: install
	$(BIN)/python -m devstack run --weeks $(WEEKS) $(if $(SCENARIO),--scenario $(SCENARIO)) $(if $(CADEMI_API_VERSION),--cademi-api $(CADEMI_API_VERSION)) $(if $(INCREMENTAL),--incremental $(INCREMENTAL))

up: install
	$(BIN)/python -m devstack up $(if $(SCENARIO),--scenario $(SCENARIO)) $(if $(CADEMI_API_VERSION),--cademi-api $(CADEMI_API_VERSION)) $(if $(INCREMENTAL),--incremental $(INCREMENTAL))

trigger: install
	@test -n "$(WEEK)" || (echo "usage: make trigger WEEK=YYYY-MM-DD" && exit 2)
	$(BIN)/python -m devstack trigger --week $(WEEK) $(if $(INCREMENTAL),--incremental $(INCREMENTAL))

down: install
	$(BIN)/python -m devstack down

# On the running stack: rebuild the history of a week range from the shards, or re-extract one tag's week.
replay: install
	@test -n "$(FROM)" -a -n "$(TO)" || (echo "usage: make replay FROM=YYYY-MM-DD TO=YYYY-MM-DD" && exit 2)
	$(BIN)/python -m devstack replay --from $(FROM) --to $(TO)

# The tutors' list (each class's latest week) of the running stack as CSV; in the cloud:
# `python -m progress_monitor reporting export-tutors --out lista.csv` with the project's settings.
export-tutors: install
	$(BIN)/python -m devstack export-tutors $(if $(TAG),--tag $(TAG))

# LGPD on the running stack (docs/privacy.md): everything held about one student as JSON, or their erasure
# (a dry run unless CONFIRM=1). In the cloud: `python -m progress_monitor privacy export|erase …`.
STUDENT ?=
REQUEST ?=
BY ?= $(USER)
CONFIRM ?=
privacy-export: install
	@test -n "$(STUDENT)" || (echo "usage: make privacy-export STUDENT=<Cademi user id>" && exit 2)
	@$(BIN)/python -m devstack privacy export --student "$(STUDENT)"

privacy-erase: install
	@test -n "$(STUDENT)" -a -n "$(REQUEST)" || (echo "usage: make privacy-erase STUDENT=<id> REQUEST=<reference> [CONFIRM=1]" && exit 2)
	$(BIN)/python -m devstack privacy erase --student "$(STUDENT)" --request "$(REQUEST)" --by "$(or $(BY),operator)" $(if $(CONFIRM),--confirm,--dry-run)

reextract: install
	@test -n "$(WEEK)" -a -n "$(TAG)" || (echo "usage: make reextract WEEK=YYYY-MM-DD TAG=id" && exit 2)
	$(BIN)/python -m devstack reextract --week $(WEEK) --tag $(TAG)

# Utilisation (three ways at 2 req/s, >= 1,000 calls), the old way, overhead, memory, projection -> BENCHMARKS.md (~35 min)
bench: install
	$(BIN)/python -m devstack.bench

# Twelve simulated weeks under injected faults, through the fronts with two instances, compared with the ground truth (~30 min)
soak: install
	$(BIN)/python -m devstack.soak --weeks 12

# Prints the Looker Studio link for GCP_PROJECT / BQ_DATASET (environment), e.g. GCP_PROJECT=escola make looker-url
looker-url: install
	@$(BIN)/python -m progress_monitor reporting looker-url

clean:
	rm -rf $(VENV) .venv-checkov .venv-tfschema .mypy_cache .ruff_cache .pytest_cache var
