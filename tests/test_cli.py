"""The command line's error policy: every subcommand, given bad input, prints one line naming it, no traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from brainjepa.cli import build_parser, main

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Per subcommand: arguments with one bad input, and what the message must name."""
    garbage = tmp / "garbage.bin"
    garbage.write_text("not a file of any format\n")
    (tmp / "bad.yaml").write_text("optim:\n  lrr: 1\n")
    (tmp / "samples.tsv").write_text("cohort\tsubject\tsession\trun\tbold\tcolour\nc\t1\t1\t1\tx.nii.gz\tred\n")
    missing = str(tmp / "missing.tsv")
    return {
        "atlas": (["--space", "MNI152NLin6Asym", "--cortical-image", str(garbage), "--cortical-labels", missing,
                   "--subcortical-image", str(garbage), "--subcortical-labels", str(garbage),
                   "--out-image", str(tmp / "a.nii.gz"), "--out-labels", str(tmp / "a.tsv")], "missing.tsv"),
        "parcellate": (["--bold", str(tmp / "b.nii.gz"), "--atlas", str(garbage), "--out", str(tmp / "p.parquet")],
                       "garbage.bin"),
        "align-tr": (["--in", str(garbage), "--out", str(tmp / "o.parquet"), "--target-tr", "2"], "garbage.bin"),
        "splits": (["--samples", str(tmp / "samples.tsv"), "--fractions", "0.6,0.2,0.2", "--out",
                    str(tmp / "s.tsv")], "colour"),
        "split-balance": (["--splits", missing, "--phenotypes", missing, "--label-types", "{}", "--out",
                           str(tmp / "b.tsv")], "missing.tsv"),
        "scaling": (["--splits", missing, "--runs-root", str(tmp), "--method", "subject_mean", "--out",
                     str(tmp / "s.json")], "missing.tsv"),
        "group-fc": (["--splits", missing, "--runs-root", str(tmp), "--labels", missing, "--out",
                      str(tmp / "fc.npy")], "missing.tsv"),
        "gradients": (["--fc", str(garbage), "--labels", missing, "--out", str(tmp / "g.tsv")], "garbage.bin"),
        "shards": (["--splits", missing, "--runs-root", str(tmp), "--phenotypes", missing, "--label-types", "{}",
                    "--stats", missing, "--max-shard-mb", "1", "--dtype", "float16", "--window", "16",
                    "--short-policy", "exclude", "--out-dir", str(tmp / "shards")], "missing.tsv"),
        "pretrain": (["--config", str(tmp / "bad.yaml")], "optim.lrr"),
        "launch": (["--nodes", "0", "--", "pretrain"], "pretrain.nodes"),
        "check-distributed": (["--device", "cpu", "--expect-world-size", "3"], "world size 1, expected 3"),
        "model-info": (["--size", "huge"], "model.size"),
        "convert-checkpoint": (["--official", str(garbage), "--gradients", missing, "--out", str(tmp / "w.pt")],
                               "garbage.bin"),
        "export-official": (["--checkpoint", str(garbage), "--out", str(tmp / "o.pth")], "garbage.bin"),
        "export-model": (["--checkpoint", str(garbage), "--out", str(tmp / "model")], "garbage.bin"),
        "embed": (["--model", str(tmp / "no_bundle"), "--timeseries", str(garbage), "--device", "cpu", "--out",
                   str(tmp / "e.parquet")], "no_bundle"),
        "simulate-atlas": (["--root", str(garbage)], "garbage.bin"),
        "simulate-run": (["--root", str(tmp / "nodemo"), "--bold", str(tmp / "b.nii.gz"), "--cohort", "c", "--tr",
                          "2", "--n-volumes", "20", "--subject", "1", "--session", "1", "--run", "1",
                          "--phenotype", '{"age": 50, "sex": "F"}'], "nodemo"),
        "demo-sheets": (["--samples", str(tmp / "s.tsv"), "--phenotypes", str(tmp / "p.tsv"), "--root", "demo",
                         "--cohorts", '{"c": {"tr": -1, "n_volumes": 20, "n_subjects": 2}}'], "tr"),
        "validate": (["--samples", missing], "missing.tsv"),
        "features": (["--encoder", json.dumps({"kind": "checkpoint", "path": str(garbage)}), "--cohort", "c",
                      "--shards", str(tmp / "no_shards"), "--out", str(tmp / "f.npz")], "no_shards"),
        "evaluate": (["--task", '{"name": "age", "cohorts": ["c"], "label": "age", "kind": "regresion"}',
                      "--method", "fc_linear", "--shards", str(tmp), "--out", str(tmp / "e.json")], "regresion"),
        "metrics": (["--results", str(garbage), "--out", str(tmp / "m.tsv"), "--tables", str(tmp / "t")],
                    "garbage.bin"),
        "figure-fc": (["--fc", str(garbage), "--labels", missing, "--out", str(tmp / "fc.png")], "garbage.bin"),
        "figure-gradients": (["--gradients", missing, "--labels", missing, "--out-space", str(tmp / "s.png"),
                              "--out-eigenvalues", str(tmp / "e.png")], "missing.tsv"),
        "network-attention": (["--encoder", json.dumps({"kind": "checkpoint", "path": str(garbage)}), "--task",
                               '{"name": "d", "cohorts": ["c"], "label": "d", "kind": "binary"}', "--shards",
                               str(tmp / "no_shards"), "--labels", missing, "--out-networks", str(tmp / "n.tsv"),
                               "--out-rois", str(tmp / "r.tsv"), "--figure", str(tmp / "a.png")], "no_shards"),
        "figure-pretraining": (["--log", f"run={garbage}", "--out", str(tmp / "p.png")], "garbage.bin"),
        "figure-evaluation": (["--metrics", str(garbage), "--out-methods", str(tmp / "m.png")], "garbage.bin"),
        "figure-qc": (["--parcellate-root", str(tmp), "--labels", missing, "--splits", missing, "--samples", missing,
                       "--balance", missing, "--excluded", missing, "--out-roi", str(tmp / "q.png"),
                       "--out-splits", str(tmp / "s.png"), "--out-runs", str(tmp / "r.tsv")], "missing.tsv"),
        "report-summary": (["--samples", missing, "--splits", missing, "--excluded", missing, "--out",
                            str(tmp / "s.rst")], "missing.tsv"),
        "provenance": ([str(garbage)], "garbage.bin"),
        "forecast": (["--shards", str(tmp / "no_shards"), "--cohorts", "c", "--method", "persistence", "--out",
                      str(tmp / "f.json")], "no_shards"),
        "reconstruction": (["--shards", str(tmp / "no_shards"), "--cohorts", "c", "--method", "mae", "--encoder",
                         json.dumps({"kind": "checkpoint", "path": str(garbage)}), "--out", str(tmp / "r.json")],
                        "no_shards"),
        "network-id": (["--features", "raw", "--shards", str(tmp / "no_shards"), "--cohorts", "c", "--method",
                        "raw", "--labels", missing, "--out", str(tmp / "n.json")], "no_shards"),
        "perturbation": (["--shards", str(tmp / "no_shards"), "--cohorts", "c", "--method", "jepa", "--encoder",
                     json.dumps({"kind": "checkpoint", "path": str(garbage)}), "--labels", missing, "--out",
                     str(tmp / "p.json")], "no_shards"),
        "figure-perturbation": (["--rois", missing, "--labels", missing, "--out", str(tmp / "p.png")],
                                "missing.tsv"),
        "figure-capabilities": (["--results", str(garbage), "--out", str(tmp / "c.png")], "garbage.bin"),
        "pretraining-study": (["--config", missing, "--pretrain-manifest", missing, "--shards", str(tmp / "no_shards"),
                               "--tasks", "{}", "--gradients", missing, "--out-dir", str(tmp / "study")],
                              "missing.tsv"),
    }


def test_every_subcommand_is_covered(tmp_path):
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands == set(_bad_inputs(tmp_path)) == set(COMMANDS)


COMMANDS = ["atlas", "parcellate", "align-tr", "splits", "split-balance", "scaling", "group-fc", "gradients", "shards",
            "pretrain", "launch", "check-distributed", "model-info", "convert-checkpoint", "export-official",
            "export-model", "embed",
            "simulate-atlas", "simulate-run", "demo-sheets", "validate", "features", "evaluate", "metrics", "figure-fc",
            "figure-gradients",
            "network-attention", "figure-pretraining", "figure-evaluation", "figure-qc", "report-summary",
            "provenance", "forecast", "reconstruction", "network-id", "perturbation", "figure-perturbation",
            "figure-capabilities", "pretraining-study"]


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_is_one_line_naming_it(tmp_path, capsys, command):
    args, named = _bad_inputs(tmp_path)[command]
    assert main([command, *args]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(err) == 1, err
    assert err[0].startswith(f"brainjepa {command}: error: ") and named in err[0], err[0]
    assert "Traceback" not in err[0]


def test_every_output_has_provenance_and_the_command_prints_and_checks_it(tmp_path, capsys):
    """Outputs carry the version, the settings (hash) and their inputs' checksums: time series embed it (with the
    record of its source upstream), other files get a sidecar; a failed command leaves none."""
    import numpy as np

    from brainjepa.io import write_timeseries
    from brainjepa.provenance import read_provenance

    write_timeseries(np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32), ["a", "b", "c"],
                     tmp_path / "ts.parquet", {"tr": 0.735})
    assert main(["align-tr", "--in", str(tmp_path / "ts.parquet"), "--out", str(tmp_path / "al.parquet"),
                 "--target-tr", "2", "--method", "stride"]) == 0
    record, problems = read_provenance(tmp_path / "al.parquet")
    prov = record["provenance"]
    assert prov["command"] == "align-tr" and prov["settings"] == {"target_tr": 2.0, "method": "stride"}
    source = prov["inputs"]["in"][0]
    assert source["path"] == str(tmp_path / "ts.parquet") and len(source["sha256"]) == 64
    assert problems == [] and not (tmp_path / "al.parquet.provenance.json").exists()   # embedded, no sidecar
    table = tmp_path / "labels.tsv"
    table.write_text("index\tname\tnetwork\themisphere\n1\ta\tX\tL\n2\tb\tY\tL\n3\tc\tY\tR\n")
    fc = tmp_path / "fc.npy"
    np.save(fc, np.eye(3))
    assert main(["figure-fc", "--fc", str(fc), "--labels", str(table), "--out", str(tmp_path / "fc.png")]) == 0
    record, problems = read_provenance(tmp_path / "fc.png")
    assert record["command"] == "figure-fc" and set(record["inputs"]) == {"fc", "labels"} and problems == []
    assert record["brainjepa_version"] and len(record["settings_sha256"]) == 64
    capsys.readouterr()
    assert main(["provenance", str(tmp_path / "fc.png"), "--check"]) == 0
    assert '"command": "figure-fc"' in capsys.readouterr().out
    np.save(fc, 2 * np.eye(3))                                                          # an input changed since
    assert main(["provenance", str(tmp_path / "fc.png"), "--check"]) == 1
    assert f"input {fc}: changed since" in capsys.readouterr().err
    # a failed rerun removes the old sidecar with its output's claim
    fc.write_bytes(b"not an array")
    assert main(["figure-fc", "--fc", str(fc), "--labels", str(table), "--out", str(tmp_path / "fc.png")]) == 1
    assert not (tmp_path / "fc.png.provenance.json").exists()


def test_messages_show_plain_values_not_numpy_reprs():
    """Network names come from a numpy array: the message printed `got [np.str_('Vis')]`."""
    import numpy as np

    from brainjepa.capabilities.network_id import scored_networks
    from brainjepa.errors import InputError

    with pytest.raises(InputError, match=r"needs at least 2 networks with 2\+ ROIs, got \['Vis'\]$") as info:
        scored_networks(np.array(["Vis", "Vis", "SM"]))
    assert "np." not in str(info.value)
    _, scored, small = scored_networks(np.array(["Vis", "Vis", "SM", "SM", "DMN"]))
    assert scored == ["Vis", "SM"] and small == ["DMN"] and all(type(n) is str for n in scored + small)


def test_a_setting_longer_than_a_file_name_is_a_setting_not_an_error(tmp_path):
    """The workflow passes the evaluation settings as one JSON argument; past the file-name limit (255 bytes) the
    provenance step's is-this-a-file check raised ENAMETOOLONG and every evaluation job failed with it."""
    import argparse

    from brainjepa.provenance import split_arguments

    long_json = json.dumps({"linprobe": {"lr_grid": [0.01] * 60}})
    assert len(long_json) > 300
    (tmp_path / "in.tsv").write_text("x\n")
    args = argparse.Namespace(protocols=long_json, table=str(tmp_path / "in.tsv"), out=str(tmp_path / "o.json"))
    settings, inputs, outputs = split_arguments(args)
    assert settings["protocols"] == long_json and inputs == {"table": [str(tmp_path / "in.tsv")]}
    assert outputs == [tmp_path / "o.json"]
