"""Static checks of infra/terraform against the code (Terraform's own plan: tests/test_terraform_plan.py)."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import hcl2
import pytest

from progress_monitor.settings import SECRET_NAMES, Settings

ROOT = Path(__file__).resolve().parents[1]
TF = ROOT / "infra" / "terraform"
PACKAGE = ROOT / "src" / "progress_monitor"


def unquote(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip('"')
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items()}
    return value


def parsed(directory: Path = TF) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            for block, items in hcl2.load(handle).items():
                merged.setdefault(block, []).extend(items)
    return merged


def tf_locals() -> dict[str, Any]:
    return unquote({k: v for block in parsed()["locals"] for k, v in block.items()})


def resources(kind: str) -> dict[str, Any]:
    return {
        unquote(name): unquote(body)
        for block in parsed()["resource"]
        for k, group in block.items()
        if unquote(k) == kind
        for name, body in group.items()
    }


def test_terraform_is_formatted() -> None:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed")
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", str(TF)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_function_folder_and_entry_point_is_deployed() -> None:
    functions = tf_locals()["functions"]
    folders = {p.parent.name for p in (ROOT / "functions").glob("*/main.py")}
    assert {f["source"] for f in functions.values()} == folders
    for name, spec in functions.items():
        tree = ast.parse((ROOT / "functions" / spec["source"] / "main.py").read_text())
        entry_points = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert spec["entry_point"] in entry_points, name
    declared = {spec["entry_point"] for spec in functions.values()}
    for folder in folders:
        tree = ast.parse((ROOT / "functions" / folder / "main.py").read_text())
        public = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
        assert public <= declared, folder  # every public function of an adapter is a deployed entry point
    assert "fn" in resources("google_cloudfunctions2_function")


def test_environment_variables_match_the_settings_object() -> None:
    names = {f.name.upper() for f in fields(Settings) if f.name != "local_secrets"}
    loc = tf_locals()
    env = set(loc["common_env"]) | set(loc["form_env"])
    unknown = env - names
    assert not unknown, f"Terraform sets variables the settings object does not read: {unknown}"
    for required in (
        "GCP_PROJECT",
        "BQ_DATASET",
        "SHARDS_BUCKET",
        "CADEMI_BASE_URL",
        "SECRETS_BACKEND",
        "FORM_AUTH",
        "IAP_AUDIENCE",
        "PIECE_BUDGET_S",
        "CADEMI_RATE_PER_SECOND",
    ):
        assert required in env


def test_every_schema_file_is_used() -> None:
    files = {p.stem for p in (PACKAGE / "schemas").glob("*.json")}
    assert set(tf_locals()["tables"]) == files
    text = (TF / "bigquery.tf").read_text()
    assert "local.schemas" in text and "schemas/${t}.json" in (TF / "locals.tf").read_text()


def test_every_secret_the_code_reads_is_declared_and_granted() -> None:
    loc = tf_locals()
    assert set(loc["secrets"]) == set(SECRET_NAMES)
    granted = {s for names in loc["secret_readers"].values() for s in names}
    assert granted == set(SECRET_NAMES)
    # the secret ids are the ones progress_monitor.platform.secret_store derives from the variable names
    from progress_monitor.platform.secret_store import secret_id

    assert {secret_id(n) for n in SECRET_NAMES} == set(loc["secrets"].values())
    # what each function's code reads: the pipeline reads the API key in extract_progress only; the add_tag
    # entry points read the key and their own secret
    assert loc["secret_readers"]["extract_progress"] == ["CADEMI_API_KEY", "PRIVACY_KEY"]
    assert set(loc["secret_readers"]["add_tag"]) == {"CADEMI_API_KEY", "FORM_CSRF_SECRET"}
    assert set(loc["secret_readers"]["slack_command"]) == {"CADEMI_API_KEY", "SLACK_SIGNING_SECRET"}


def test_a_runs_lanes_are_extract_progress_slots() -> None:
    """Lanes beyond the slots would park tasks in Cloud Run's queue (429s, dead letters); fewer waste capacity."""
    loc = tf_locals()
    assert (
        loc["common_env"]["EXTRACTION_LANES"]
        == "${tostring(local.progress_instances * var.extraction.concurrent_pieces)}"
    )
    service = resources("google_cloudfunctions2_function")["fn"]["service_config"][0]
    assert service["max_instance_count"] == '${each.key == "extract_progress" ? local.progress_instances : 3}'
    assert service["max_instance_request_concurrency"].startswith(
        '${each.key == "extract_progress" ? var.extraction.concurrent_pieces'
    )


def test_function_requirements_match_the_lock() -> None:
    lock = dict(
        line.split("==")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for line in (ROOT / "functions" / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            assert lock.get(name) == version, line


def package_file_set() -> list[str]:
    """The files Terraform's fileset("**/*.{py,json,sql,html}") selects from the shared package."""
    patterns = ["*.py", "*.json", "*.sql", "*.html"]
    chosen = []
    for path in PACKAGE.rglob("*"):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.is_file() and "__pycache__" not in rel and any(fnmatch.fnmatch(path.name, p) for p in patterns):
            chosen.append(rel)
    return sorted(chosen)


CHECK = """
import sys
sys.path = [p for p in sys.path if not p.startswith({src!r})]
sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__ + repr(f)]
sys.path.insert(0, {dest!r})
import main
import progress_monitor
assert progress_monitor.__file__.startswith({dest!r}), progress_monitor.__file__
from progress_monitor.pipeline import reporting
from progress_monitor.platform import warehouse
from progress_monitor.add_tag import command, form
from progress_monitor.settings import Settings
for name in ("report_product_week", "report_student_week", "report_class_week", "report_movements",
             "report_run_health", "tutor_list"):
    reporting.sql_text(name, Settings())
for table in warehouse.TABLES:
    warehouse.schema_json(table)
form.TEMPLATES.get_template("add_tag.html")
assert "ajuda" in command.VERBS
print("ok")
"""


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in (ROOT / "functions").glob("*/main.py")))
def test_each_zip_contains_everything_its_main_imports(folder: str, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text((ROOT / "functions" / folder / "main.py").read_text())
    for rel in package_file_set():
        target = tmp_path / "progress_monitor" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((PACKAGE / rel).read_bytes())
    code = CHECK.format(src=str(ROOT / "src"), dest=str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_checkov_finds_nothing_that_is_not_skipped_with_a_reason() -> None:
    checkov = ROOT / ".venv-checkov" / "bin" / "checkov"
    assert checkov.exists(), "make installs checkov in .venv-checkov"
    result = subprocess.run(
        [str(checkov), "-d", str(TF), "--framework", "terraform", "--quiet", "--compact", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    for path in TF.glob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                assert re.search(r"checkov:skip=CKV\w*_\d+:\s*\S.{10,}", line), f"skip without a reason: {line}"
