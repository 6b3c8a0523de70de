"""The one options schema (contract/options.py): the REST request model, the `reconstruct` CLI flags, the job
runner and the evaluation all build the same options and the same recipe string from it."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bench import cnn_eval
from cli.cmd_reconstruct import options_from_args
from cli.main import build_parser, main
from contract import options as schema
from contract.options import DEFAULTS, ReconOptions
from physics.errors import InputError, OptionsError
from service.models import ReconOptions as RestOptions
from service.models import ReconRequest
from workers.pipeline import job_options

ROOT = Path(__file__).parents[1]
SCAN = {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1"}


def rest_job_options(options: dict) -> ReconOptions:
    """What a worker runs for a REST request: the stored request (JSON) -> job spec -> workers.pipeline.job_options."""
    stored = json.loads(ReconRequest(scan=SCAN, options=options).model_dump_json())  # as the queue keeps it
    return job_options({"job_id": "j", "scan": stored["scan"], "options": stored["options"], "device": "auto"})
    # (a worker's device setting defaults to auto, as the schema's does)


def cli_options(*flags: str) -> ReconOptions:
    args = build_parser().parse_args(["reconstruct", "crystal.npz", "--out", "crystal.cxi", *flags])
    return options_from_args(args)


def test_default_rest_job_cli_run_and_evaluation_build_the_same_options_and_recipe():
    rest, cli = rest_job_options({}), cli_options()
    evaluation = cnn_eval.method_options("cnn_er")  # (b), the paper's method, as `bench.cnn_eval run` runs it
    assert rest == cli == evaluation == DEFAULTS
    assert rest.recipe() == cli.recipe() == evaluation.recipe() == "ER**400"
    assert DEFAULTS.support_threshold == 0.25 and DEFAULTS.er_cycles == 400 and DEFAULTS.engine == "builtin"
    # the evaluation's own command line leaves the ER cycles to the schema
    args = cnn_eval.build_parser().parse_args(["run"])
    assert cnn_eval.method_options("cnn_er", args.refine) == DEFAULTS


def test_same_non_default_options_through_rest_and_cli_old_and_new_flag_names():
    body = {"er_cycles": 50, "pre_recipe": "RAAR**20", "support_threshold": 0.3, "engine": "torch",
            "crop_size": [32, 48, 48], "border_n": 1}
    rest = rest_job_options(body)
    new = cli_options("--er-cycles", "50", "--pre-recipe", "RAAR**20", "--support-threshold", "0.3",
                      "--engine", "torch", "--crop-size", "32,48,48", "--border-n", "1")
    old = cli_options("--refine", "50", "--pre-recipe", "RAAR**20", "--threshold", "0.3", "--engine", "torch",
                      "--crop-size", "32,48,48", "--border-n", "1")
    assert rest == new == old
    assert rest.engine == "builtin" and rest.crop_size == (32, 48, 48)
    assert rest.recipe() == "RAAR**20,ER**50"  # pre_recipe included, as run and as recorded
    assert cnn_eval.method_options("cnn_raar_er").recipe() == f"{cnn_eval.PRE_RECIPE},ER**400"


def test_rest_model_matches_the_schema_field_by_field():
    props = RestOptions.model_json_schema()["properties"]
    rest = [f for f in schema.schema_fields() if f.metadata["rest"]]
    assert list(props) == [f.name for f in rest]  # same names, same order; device and model are the worker's
    assert {f.name for f in schema.schema_fields()} - set(props) == {"device", "model"}
    made = RestOptions()
    for f in rest:
        m, p = f.metadata, props[f.name]
        assert getattr(made, f.name) == f.default, f.name
        assert p["description"] == m["help"], f.name
        where = p["anyOf"][0]["items"] if f.name == "crop_size" else p["anyOf"][0] if schema.optional(f) else p
        for ours, theirs in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"),
                             ("lt", "exclusiveMaximum")):
            assert where.get(theirs) == m[ours], (f.name, ours)
    assert set(props["engine"]["enum"]) == {"builtin", "pynx", "torch"}
    assert props["negative"]["enum"] == list(schema.NEGATIVES) and props["refine_binned"]["type"] == "boolean"
    assert props["pre_recipe"]["maxLength"] == schema.PRE_RECIPE_MAX_LENGTH


def test_cli_flags_match_the_schema():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["reconstruct"]
    by_dest = {}
    for action in sub._actions:
        by_dest.setdefault(action.dest, set()).update(action.option_strings)
    for f in schema.schema_fields():
        flags = by_dest[f.name]
        assert "--" + f.name.replace("_", "-") in flags and set(f.metadata["aliases"]) <= flags, f.name
        assert sub.get_default(f.name) == f.default, f.name
    assert {"--refine", "--er-cycles"} <= by_dest["er_cycles"] and {"--threshold", "--support-threshold"} <= \
        by_dest["support_threshold"]


def test_front_end_options_through_rest_cli_and_info_give_the_same_options():
    body = {"refine_binned": True, "photon_scale": 2.5, "background": 0.5, "photon_threshold": 1.0,
            "negative": "mask", "crop_size": [128, 128, 128]}
    flags = ("--refine-binned", "--photon-scale", "2.5", "--background", "0.5", "--photon-threshold", "1",
             "--negative", "mask", "--crop-size", "128")
    rest, cli = rest_job_options(body), cli_options(*flags)
    assert rest == dataclasses.replace(cli, crop_size=(128, 128, 128))  # one size on the CLI, three in REST
    assert (rest.refine_binned, rest.photon_scale, rest.background, rest.photon_threshold, rest.negative) == \
        (True, 2.5, 0.5, 1.0, "mask")
    assert cli.support_threshold == DEFAULTS.support_threshold  # --photon-threshold is not --threshold
    # `info` takes the same schema-generated flags for the front end's fields and builds the same front end
    info = options_from_args(build_parser().parse_args(["info", "crystal.npz", *flags]), schema.FRONTEND_FIELDS)
    assert info == dataclasses.replace(DEFAULTS, **{k: getattr(cli, k) for k in schema.FRONTEND_FIELDS})
    from physics.preprocess import FrontEndOptions

    fe = FrontEndOptions.from_options(rest)
    assert (fe.refine_binned, fe.photon_scale, fe.background, fe.photon_threshold, fe.negative, fe.crop_size) == \
        (True, 2.5, 0.5, 1.0, "mask", (128, 128, 128))
    # the schema's front-end fields are exactly the user-facing fields of FrontEndOptions
    assert set(schema.FRONTEND_FIELDS) == {f.name for f in dataclasses.fields(FrontEndOptions)} - {"tolerance"}
    assert FrontEndOptions.from_options(DEFAULTS) == FrontEndOptions()  # same defaults


@pytest.mark.parametrize("body", [{"negative": "ignore"}, {"photon_scale": 0}, {"background": -1.0},
                                  {"photon_threshold": -0.5}, {"refine_binned": "perhaps"}])
def test_bad_front_end_options_are_a_422_in_the_api_and_an_options_error_in_the_schema(body):
    (name, value), = body.items()
    with pytest.raises(ValidationError) as err:
        ReconRequest(scan=SCAN, options=body)
    assert err.value.errors()[0]["loc"] == ("options", name)
    with pytest.raises(OptionsError, match=name):
        ReconOptions(**body)


def test_bad_negative_or_background_on_the_cli_exit_2_before_reading(tmp_path, capsys):
    missing = str(tmp_path / "absent.npz")  # never read: the options fail first
    for cmd in (["reconstruct", missing, "--out", str(tmp_path / "o.cxi")], ["info", missing]):
        with pytest.raises(SystemExit) as ex:
            main([*cmd, "--negative", "ignore"])
        assert ex.value.code == 2 and "--negative: invalid choice: 'ignore'" in capsys.readouterr().err
        assert main([*cmd, "--background", "-1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("bcdi-recon: error: background") and ">= 0.0, got -1.0" in err


@pytest.mark.parametrize("bad, field", [
    ({"er_cycles": -1}, "er_cycles"), ({"support_threshold": 1.0}, "support_threshold"),
    ({"crop_size": (8, 8, 8)}, "crop_size"), ({"engine": "matlab"}, "engine"), ({"border_n": 65}, "border_n"),
    ({"update_period": 0}, "update_period"), ({"free_ratio": 0.6}, "free_ratio"), ({"seed": -1}, "seed"),
    ({"device": "gpu"}, "device"), ({"er_cycles": 2.5}, "er_cycles"), ({"init_threshold": 0}, "init_threshold"),
])
def test_bad_values_raise_options_error_naming_the_field(bad, field):
    with pytest.raises(OptionsError, match=field) as err:
        ReconOptions(**bad)
    assert isinstance(err.value, InputError)
    with pytest.raises(OptionsError, match="unknown option"):
        ReconOptions.from_mapping({"refine": 10})  # the old pipeline name is not a job option


def test_pre_recipe_errors_are_readable_in_the_schema_and_the_api():
    for text in ("RAAR**200;rm -rf", "RAAR*20", "Sup**3", "RAAR**20,FAA"):
        with pytest.raises(OptionsError, match="pre-recipe") as err:
            ReconOptions(pre_recipe=text)
        assert "NAME**N" in str(err.value)
        with pytest.raises(ValidationError) as api_err:
            RestOptions(pre_recipe=text)
        (e,) = api_err.value.errors()
        assert e["loc"] == ("pre_recipe",) and "NAME**N" in e["msg"] and "^$|" not in e["msg"]
    with pytest.raises(OptionsError, match="er_cycles > 0"):
        ReconOptions(pre_recipe="RAAR**20", er_cycles=0)
    with pytest.raises(ValidationError, match="er_cycles > 0"):
        RestOptions(pre_recipe="RAAR**20", er_cycles=0)


def test_the_schema_and_the_request_model_import_neither_numpy_nor_torch():
    code = ("import sys, contract.options, service.models; "
            "bad = [m for m in ('numpy', 'torch') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_schema_is_frozen_and_round_trips_through_json():
    o = ReconOptions(crop_size=[32, 32, 32], pre_recipe="HIO**10", engine="torch")
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.er_cycles = 3
    assert ReconOptions.from_mapping(json.loads(json.dumps(o.to_dict()))) == o


def test_cli_answers_exit_2_only_for_input_errors_and_internal_error_otherwise(monkeypatch, capsys):
    import cli.cmd_simulate as cmd

    def boom(args):
        raise KeyError("a bug, not bad input")

    monkeypatch.setattr(cmd, "run", boom)
    assert main(["simulate", "--out", "x.npz"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bcdi-recon: internal error: KeyError: a bug, not bad input")

    def bad(args):
        raise OptionsError("--size must be >= 16")

    monkeypatch.setattr(cmd, "run", bad)
    assert main(["simulate", "--out", "x.npz"]) == 2
    assert capsys.readouterr().err.strip() == "bcdi-recon: error: --size must be >= 16"

    def oserror(args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cmd, "run", oserror)
    assert main(["simulate", "--out", "x.npz"]) == 1  # an outage, not the user's input
    assert "internal error: OSError" in capsys.readouterr().err
