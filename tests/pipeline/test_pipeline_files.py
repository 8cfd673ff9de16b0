"""The Nextflow pipeline files are complete and consistent, checked without the Nextflow runtime.

Every process is included and used, calls one ``cryorestore`` subcommand that exists with options that
exist, has a stub that makes its outputs, publishes under params.outdir and emits versions.yml; every
label is defined; params, schema and profiles agree; the container recipes build what they should.
"""

from __future__ import annotations

import argparse
import os
import contextlib
import io
import json
import re

import jsonschema
import pytest

import nf_files as nf
from cryorestore.cli import build_parser

ROOT = nf.ROOT
PROCESSES = nf.all_processes()
IDS = [p.name for p in PROCESSES]
MAIN = (ROOT / "main.nf").read_text()
CONFIG = ROOT / "nextflow.config"
CONFIG_FILES = [CONFIG, *sorted((ROOT / "conf").glob("*.config"))]
SCHEMA = json.loads((ROOT / "nextflow_schema.json").read_text())
EXPECTED = {"SAMPLESHEET_CHECK", "SIMULATE", "RECONSTRUCT", "TRAIN", "PREDICT", "EVALUATE", "REPORT"}
REQUIRED_PROFILES = {"standard", "test", "gpu", "singularity", "apptainer", "docker", "slurm"}


def schema_properties() -> dict[str, dict]:
    props: dict[str, dict] = dict(SCHEMA.get("properties", {}))
    for group in SCHEMA.get("$defs", {}).values():
        props.update(group.get("properties", {}))
    return props


def subparser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The argparse parser of ``cryorestore WORDS...`` (descending into nested subcommands)."""
    parser = build_parser()
    path: list[str] = []
    for w in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or w not in subs[0].choices:
            break
        parser = subs[0].choices[w]
        path.append(w)
    return parser, path


def test_every_expected_process_exists_one_per_file():
    assert set(IDS) >= EXPECTED, f"missing processes: {sorted(EXPECTED - set(IDS))}"
    for f in sorted(nf.MODULES.glob("*.nf")):
        names = [p.name for p in nf.read_process(f)]
        assert len(names) == 1, f"{f.name} holds {names}; nf-core keeps one process per file"


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
def test_process_included_and_used(proc):
    stem = proc.path.stem
    inc = re.search(rf"include\s*\{{\s*{proc.name}\s*\}}\s*from\s*['\"]\./modules/local/{stem}(\.nf)?['\"]", MAIN)
    assert inc, f"main.nf does not include {proc.name} from ./modules/local/{stem}"
    body = MAIN[MAIN.index("workflow {"):]
    assert re.search(rf"\b{proc.name}\s*\(", body), f"main.nf includes {proc.name} but never calls it"


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
def test_script_calls_existing_subcommand_and_options(proc):
    words, options, ncalls = proc.command()
    assert ncalls == 1, f"{proc.name}: script must call exactly one cryorestore subcommand, found {ncalls}"
    parser, path = subparser(words)
    assert path, f"{proc.name} calls `cryorestore {' '.join(words)}`, but cryorestore has no such subcommand yet"
    assert path == words, f"{proc.name} calls `cryorestore {' '.join(words)}`, only `cryorestore {' '.join(path)}` exists"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*words, "--help"])
    assert exc.value.code == 0, f"`cryorestore {' '.join(words)} --help` failed"
    known = {s for a in parser._actions for s in a.option_strings}
    missing = [o for o in options if o not in known]
    assert not missing, (
        f"{proc.name}: `cryorestore {' '.join(words)}` has no option(s) {', '.join(missing)} "
        f"(see `cryorestore {' '.join(words)} --help`)"
    )


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
def test_process_has_stub_making_its_outputs(proc):
    stub = proc.sections.get("stub")
    assert stub and stub.strip(), f"{proc.name} has no stub: block"
    for out in proc.output_paths():
        name = out.replace("${meta.id}/", "")
        if name == "${meta.id}":
            assert "mkdir -p ${meta.id}" in stub, f"{proc.name}: stub does not create the folder {out}"
            continue
        assert name in stub, f"{proc.name}: stub does not create output {out}"


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
def test_process_publishes_and_emits_versions(proc):
    assert re.search(r"publishDir\s+\"\$\{params\.outdir\}/", proc.directives), \
        f"{proc.name}: no publishDir under params.outdir"
    assert re.search(r"path\s+'versions\.yml',\s*emit:\s*versions", proc.sections["output"]), \
        f"{proc.name}: no `path 'versions.yml', emit: versions` output"
    for sec in ("script", "stub"):
        assert "> versions.yml" in proc.sections[sec], f"{proc.name}: {sec} does not write versions.yml"
    assert "export OMP_NUM_THREADS=${task.cpus}" in proc.sections["script"], \
        f"{proc.name}: the script does not pass task.cpus on (OMP_NUM_THREADS)"


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
def test_labels_defined_in_base_config(proc):
    base = (ROOT / "conf" / "base.config").read_text()
    defined = set(re.findall(r"withLabel:\s*['\"]([\w-]+)['\"]", base))
    assert proc.labels, f"{proc.name} has no resource label"
    for label in proc.labels:
        assert label in defined, f"{proc.name} uses label '{label}', which conf/base.config does not define"


def test_gpu_processes_take_the_device():
    gpu = [p for p in PROCESSES if "process_gpu" in p.labels]
    assert {"TRAIN", "PREDICT"} <= {p.name for p in gpu}
    for p in gpu:
        assert "--device ${params.device}" in p.sections["script"], f"{p.name}: GPU process must pass --device ${{params.device}}"
    for p in PROCESSES:
        if p not in gpu:
            assert "${params.device}" not in p.sections["script"], f"{p.name} is not a GPU process but takes params.device"
    gpu_conf = (ROOT / "conf" / "gpu.config").read_text()
    assert re.search(r"device\s*=\s*'cuda'", gpu_conf) and re.search(r"accelerator\s*=\s*1", gpu_conf)
    slurm = (ROOT / "conf" / "slurm.config").read_text()
    assert "--gres=" in slurm and "executor = 'slurm'" in slurm and "params.slurm_queue" in slurm


def test_base_config_retries_oom_with_more_memory():
    base = nf.strip_comments((ROOT / "conf" / "base.config").read_text())
    assert re.search(r"task\.exitStatus in \[137, 140, 75\] \? 'retry'", base)  # 75: a predict tile did not fit in GPU memory
    assert re.search(r"memory\s*=\s*\{[^}]*task\.attempt", base)
    assert "resourceLimits" in base


def test_profiles_exist_including_those_the_docs_name():
    declared = nf.profiles(CONFIG)
    assert REQUIRED_PROFILES <= declared, f"nextflow.config lacks profiles {sorted(REQUIRED_PROFILES - declared)}"
    named: set[str] = set()
    for m in re.finditer(r"-profile\s+([\w,]+)", (ROOT / "README.md").read_text()):
        named.update(m.group(1).split(","))
    assert named, "README.md names no -profile"
    assert named <= declared, f"the docs name profiles {sorted(named - declared)} that nextflow.config lacks"


def test_params_match_schema_both_ways():
    config = nf.config_params(CONFIG)
    props = schema_properties()
    assert set(config) - set(props) == set(), f"params missing from nextflow_schema.json: {sorted(set(config) - set(props))}"
    assert set(props) - set(config) == set(), f"schema params missing from nextflow.config: {sorted(set(props) - set(config))}"
    for cfg in CONFIG_FILES[1:]:
        extra = set(nf.config_params(cfg)) - set(props)
        assert not extra, f"{cfg.name} sets params {sorted(extra)} that nextflow_schema.json lacks"


def test_every_param_used_is_declared():
    config = set(nf.config_params(CONFIG))
    for f in [ROOT / "main.nf", *sorted(nf.MODULES.glob("*.nf")), *CONFIG_FILES]:
        undeclared = nf.params_used(f.read_text()) - config
        assert not undeclared, f"{f.relative_to(ROOT)} uses params {sorted(undeclared)} not declared in nextflow.config"


_literal = nf.literal


def test_schema_is_valid_and_defaults_agree():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    props = schema_properties()
    values = {}
    for name, text in nf.config_params(CONFIG).items():
        if "${" in text:  # profile overrides built from projectDir
            continue
        values[name] = _literal(text)
        if values[name] is None:
            assert "default" not in props[name], f"{name} is null in nextflow.config but has a schema default"
            continue
        assert props[name].get("default") == values[name], \
            f"{name}: nextflow.config default {values[name]!r} != schema default {props[name].get('default')!r}"
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = [e.message for e in validator.iter_errors({k: v for k, v in values.items() if v is not None})]
    assert not errors, f"nextflow.config defaults break the schema: {errors}"
    bad = {"method": "n2v", "split": "x2y", "epochs": 0, "sim_shape": "32,64", "loss": "fsc"}
    for k, v in bad.items():
        assert list(validator.iter_errors({**values, k: v})), f"schema accepts {k}={v!r}"


def test_test_profile_simulates_a_small_cpu_run():
    test = nf.config_params(ROOT / "conf" / "test.config")
    assert test["simulate"] == "true" and test["device"] == "'cpu'"
    assert int(test["epochs"]) <= 5
    shape = [int(v) for v in test["sim_shape"].strip("'").split(",")]
    assert max(shape) <= 64
    # the disjoint validation split must fit along y: training box, a gap of one crop, validation box
    from cryorestore.methods import get_method

    method = nf.config_params(CONFIG)["method"].strip("'")
    crop = int(test["subtomo_size"])
    box = get_method(method).extract_size(crop)
    assert 2 * box + crop <= shape[1], f"{method}: boxes of {box} for crops of {crop} do not fit a y axis of {shape[1]}"


@pytest.mark.parametrize("recipe", ["Dockerfile", "cryorestore.def"])
def test_container_recipe_installs_package_for_gpu_archs(recipe):
    text = (ROOT / "containers" / recipe).read_text()
    assert re.search(r"cuda[\w.-]*devel", text), "base image must be a CUDA devel PyTorch image (nvcc for the extension)"
    arch = re.search(r"TORCH_CUDA_ARCH_LIST=\"([^\"]+)\"", text)
    assert arch and "8.0" in arch.group(1) and "9.0" in arch.group(1), "TORCH_CUDA_ARCH_LIST must name the architectures"
    assert re.search(r"pip install --no-build-isolation (-e )?[\"']?\.", text), "install the package against the image's torch"
    assert "python -m cryorestore.native --build" in text
    assert re.search(r"(RUN|%test\n)\s*cryorestore --help", text), "the build must run `cryorestore --help` as its check"


def test_docs_commands_use_existing_params():
    """Every `--name` in a `nextflow run` command of the docs is a pipeline param (Nextflow's own take one dash)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = re.findall(r"nextflow run main\.nf[^\n`]*", text)
    assert len(commands) >= 5
    props = schema_properties()
    used = {m for c in commands for m in re.findall(r"\s--(\w+)", c)}
    assert used and used <= set(props), f"docs pass unknown params: {sorted(used - set(props))}"


# Values of each script's local variables and inputs, as the test profile makes them for tomogram sim1.
# A new ${...} in a script fails the test below until it is added here.
TEST_VALUES = {
    "meta.id": "sim1", "meta.seed": "1", "task.cpus": "2", "task.process": "X", "workflow.launchDir": "/launch",
    "samplesheet": "sheet.csv", "shape": "32 64 64", "tilt_series": "input/ts.st", "angles": "input/ts.tlt",
    "thickness": "--thickness 16", "pairs": "--even even1/e.mrc --odd odd1/o.mrc --even even2/e.mrc --odd odd2/o.mrc",
    "model": "sim", "even": "even/even.mrc", "odd": "odd/odd.mrc", "tile": "--tile 32", "overlap": "--overlap 8",
    "raw": "raw/full.mrc", "restored": "sim1_restored.mrc", "truth_opt": "--truth truth/gt.mrc",
    "particles_opt": "--particles particles/p.star", "template_opt": "--template template/t.mrc",
    "membranes_opt": "--membranes membranes/m.mrc", "match_opt": "--match-step 30", "run_dirs": "runs/sim1 runs/sim2",
    "meta.tilt_min": "-60.0", "meta.tilt_max": "60.0", "method": "isonet", "loss": "l1", "noise": "",
    "odd_opt": "--odd odd/odd.mrc --uncertainty", "truthfree_opt": "--even halves1/e.mrc --odd halves2/o.mrc --model trained/sim", "source": "--source id=sim1 --source 'simulated=cryorestore simulate' --source seed=1",
    "raw_map": "raw_mean.mrc", "overrides": "--epochs 2 --subtomo-size 8",
}


def _render(proc, params: dict[str, str]) -> list[str]:
    import shlex

    text = nf._VERSIONS_RE.sub("", proc.sections["script"])
    body = text[text.index('"""') + 3: text.rindex('"""')].replace("\\\\\n", " ")
    line = next(l for l in body.splitlines() if l.strip().startswith("cryorestore "))

    def value(m: re.Match) -> str:
        key = m.group(1)
        if key.startswith("params."):
            return params[key[7:]]
        if key == "extra":  # def extra = params.<process>_args ?: ''
            return params.get(f"{proc.name.lower()}_args", "")
        if key not in TEST_VALUES:
            raise KeyError(f"{proc.name}: no test value for ${{{key}}}; add it to TEST_VALUES")
        return TEST_VALUES[key]

    return shlex.split(re.sub(r"\$\{([\w.]+)\}", value, line))[1:]


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
def test_rendered_command_parses(proc):
    """The script's command, filled in as the test profile would, parses: options have the right arity and choices."""
    params = {**nf.config_params(CONFIG), **nf.config_params(ROOT / "conf" / "test.config")}
    params = {k: str(_literal(v)) if "${" not in v and _literal(v) is not None else v for k, v in params.items()}
    argv = _render(proc, params)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{proc.name}: `cryorestore {' '.join(argv)}` does not parse: {err.getvalue().strip().splitlines()[-1]}")


BIN = ROOT / "bin"


def test_bin_wrappers_exist_are_executable_and_thin():
    """Every `cryorestore-*` a script calls is an executable in bin/ (Nextflow puts bin/ on PATH) that
    only hands over to the package: at most a usage check and one exec of a cryorestore command."""
    called = {m for p in PROCESSES for m in re.findall(r"\b(cryorestore-[a-z-]+)", p.sections["script"])}
    assert {"cryorestore-versions", "cryorestore-raw-map"} <= called
    shipped = {f.name for f in BIN.iterdir()}
    assert called <= shipped, f"scripts call {sorted(called - shipped)}, which bin/ lacks"
    for f in BIN.iterdir():
        text = f.read_text()
        assert os.access(f, os.X_OK) and text.startswith("#!/usr/bin/env bash"), f"{f.name} is not an executable bash script"
        execs = re.findall(r"(?m)^exec (.+)$", text)
        assert len(execs) == 1, f"{f.name}: a bin/ wrapper execs exactly one command"
        words = execs[0].split()
        if words[:3] == ["python", "-m", "cryorestore.provenance"]:
            continue
        assert words[0] == "cryorestore"
        parser, path = subparser(words[1:2])
        assert path == words[1:2], f"{f.name} calls `cryorestore {words[1]}`, which does not exist"


def test_every_process_writes_versions_through_bin():
    for p in PROCESSES:
        assert re.search(r'cryorestore-versions "\$\{task\.process\}"( torch)? > versions\.yml', p.sections["script"]), p.name
