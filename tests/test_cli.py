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
        "model-info": (["--size", "huge"], "model.size"),
        "convert-checkpoint": (["--official", str(garbage), "--gradients", missing, "--out", str(tmp / "w.pt")],
                               "garbage.bin"),
        "export-official": (["--checkpoint", str(garbage), "--out", str(tmp / "o.pth")], "garbage.bin"),
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
    }


def test_every_subcommand_is_covered(tmp_path):
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands == set(_bad_inputs(tmp_path)) == set(COMMANDS)


COMMANDS = ["atlas", "parcellate", "align-tr", "splits", "split-balance", "scaling", "group-fc", "gradients", "shards",
            "pretrain", "model-info", "convert-checkpoint", "export-official", "simulate-atlas", "simulate-run",
            "demo-sheets", "validate", "features", "evaluate", "metrics", "figure-fc", "figure-gradients",
            "network-attention", "figure-pretraining", "figure-evaluation", "figure-qc", "report-summary"]


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_is_one_line_naming_it(tmp_path, capsys, command):
    args, named = _bad_inputs(tmp_path)[command]
    assert main([command, *args]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(err) == 1, err
    assert err[0].startswith(f"brainjepa {command}: error: ") and named in err[0], err[0]
    assert "Traceback" not in err[0]
