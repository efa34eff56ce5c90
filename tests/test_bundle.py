"""Model bundles (issue 29): export-model, load_model, embed, convert-checkpoint --bundle, bundles in evaluation."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from brainjepa.data.shards import build_shards
from brainjepa.errors import InputError
from brainjepa.group.gradients import write_gradients
from brainjepa.group.scaling import ScalingStats, write_scaling_stats
from brainjepa.io import read_timeseries, write_timeseries

R, T, WINDOW = 8, 80, 32
SPLITS = ("pretrain", "train", "val", "test")
MODEL = ["model.size=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=4", "model.predictor_dim=16",
         "model.predictor_depth=1", "model.patch_size=16"]


def _make_data(root):
    """Runs of one cohort at TR 2 s in the four splits, statistics with real medians and IQRs, shards per split
    (the workflow's layout), gradients and an atlas label table with networks."""
    rng = np.random.default_rng(0)
    names = [f"roi{i}" for i in range(R)]
    mixing = rng.normal(size=(3, R))
    rows = []
    for i in range(24):
        data = 5.0 + rng.normal(size=(T, 3)) @ mixing + 0.5 * rng.normal(size=(T, R))
        path = root / "runs" / f"r{i:02d}.parquet"
        write_timeseries(data.astype(np.float32), names, path, {"tr": 2.0})
        rows.append({"run_id": f"c/sub-{i:02d}_ses-1_run-1", "cohort": "c", "subject": f"{i:02d}", "session": "1",
                     "run": "1", "split": SPLITS[i % 4] if i >= 4 else "pretrain", "path": str(path),
                     "age": float(50 + i)})
    frame = pd.DataFrame(rows)
    stats = ScalingStats("subject_mean", tuple(names), rng.normal(5, 0.1, R), rng.uniform(0.5, 2.0, R), 8)
    write_scaling_stats(stats, root / "stats.json")
    for split in SPLITS:
        build_shards(frame[frame["split"] == split], stats, root / "shards" / split, window=WINDOW,
                     rows_per_row_group=4, flat=True, label_columns={"age": "continuous"})
    write_gradients(rng.normal(size=(R, 4)), np.linspace(1, 0.5, 4), names, root / "gradients.tsv")
    pd.DataFrame({"index": range(1, R + 1), "name": names, "network": ["Vis"] * 4 + ["Default"] * 4,
                  "hemisphere": ["L", "R"] * 4, "x": 0.0, "y": 0.0, "z": 0.0}).to_csv(root / "labels.tsv", sep="\t",
                                                                                     index=False)
    return root, frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny pretraining run (one epoch) on the pretrain shards, and its bundle."""
    from brainjepa.models.bundle import export_model
    from brainjepa.train.config import load_config
    from brainjepa.train.pretrain import pretrain

    root, frame = _make_data(tmp_path_factory.mktemp("bundle"))
    cfg = load_config(None, [f"data.manifest={root / 'shards' / 'pretrain' / 'manifest.json'}",
                             f"data.gradients={root / 'gradients.tsv'}", f"data.scaling_stats={root / 'stats.json'}",
                             f"data.labels={root / 'labels.tsv'}", f"run.out_dir={root / 'run'}",
                             f"data.window={WINDOW}", "data.batch_size=4", "data.num_workers=0", "optim.epochs=1",
                             "optim.warmup_epochs=0", "run.progress=false", "run.monitor_every=0", *MODEL])
    final = pretrain(cfg)
    bundle = export_model(final, root / "models" / "tiny", tr_alignment="stride", target_tr=2.0)
    return root, frame, final, bundle


def test_the_bundle_holds_weights_config_rois_statistics_provenance_and_a_card(trained):
    from safetensors.torch import load_file

    from brainjepa.train.checkpoint import load_checkpoint

    root, _, final, bundle = trained
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        ["model.safetensors", "config.json", "rois.tsv", "scaling.json", "provenance.json", "README.md"])
    assert not list(bundle.parent.glob(".tiny.*"))                       # no temporary folder left beside it
    state = load_checkpoint(final)
    tensors = load_file(str(bundle / "model.safetensors"))             # the safetensors library alone
    assert {k.removeprefix("encoder.") for k in tensors} == set(state["target_encoder"])
    for key, value in state["target_encoder"].items():
        torch.testing.assert_close(tensors[f"encoder.{key}"], value, rtol=0, atol=0)
    config = json.loads((bundle / "config.json").read_text())
    assert config["input"]["tr"] == 2.0 and config["input"]["tr_alignment"] == "stride"
    assert config["input"]["scaling_method"] == "subject_mean" and config["input"]["dtype"] == "float16"
    assert (config["window"], config["patch_size"], config["n_rois"], config["positional"]) == (WINDOW, 16, R,
                                                                                                 "gradient")
    assert config["atlas"]["n_rois"] == R and len(config["atlas"]["labels_sha256"]) == 64
    rois = pd.read_csv(bundle / "rois.tsv", sep="\t")
    assert rois["name"].tolist() == [f"roi{i}" for i in range(R)] and rois["network"].iloc[-1] == "Default"
    from brainjepa.group.gradients import read_gradients

    np.testing.assert_allclose(rois[[f"gradient_{j}" for j in range(1, 5)]].to_numpy(),
                               read_gradients(root / "gradients.tsv")[1], rtol=1e-6)
    assert ScalingStats.load(bundle / "scaling.json").id == ScalingStats.load(root / "stats.json").id
    provenance = json.loads((bundle / "provenance.json").read_text())
    shards = json.loads((root / "shards" / "pretrain" / "manifest.json").read_text())["splits"]
    assert provenance["data"]["shards_sha256"]["pretrain"] == [e["sha256"] for e in shards["pretrain"]]
    assert provenance["training_config"]["optim"]["epochs"] == 1 and provenance["step"] == state["step"]
    card = (bundle / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: brainjepa") and "## Intended use and limits" in card
    assert f"{state['step']} optimizer steps" in card


def test_load_model_reads_json_and_safetensors_only_never_a_pickle(trained, tmp_path, monkeypatch):
    """A bundle holding a crafted pickle (it would create a folder when unpickled) loads, and nothing of the
    package calls a pickle or torch loader while it does, nor while embed runs."""
    import shutil

    import brainjepa
    from brainjepa.models.embed import RunInput, embed

    root, frame, final, bundle = trained
    crafted = tmp_path / "bundle"
    shutil.copytree(bundle, crafted)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return os.mkdir, (str(marker),)

    for name in ("pytorch_model.bin", "model.pt", "training_args.pkl"):
        (crafted / name).write_bytes(pickle.dumps(Exploit()))

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle loader was called")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    encoder = brainjepa.load_model(crafted)
    assert not encoder.training and encoder.bundle.input.window == WINDOW
    x = torch.randn(2, 1, R, WINDOW)
    assert encoder(x).shape == (2, R * WINDOW // 16, 32)
    embed(crafted, [RunInput("r", frame["path"].iloc[0])], tmp_path / "f.parquet", device="cpu", progress=False)
    assert not marker.exists()


def test_embed_equals_the_evaluation_features_of_the_same_windows(trained, tmp_path):
    """On the runs of the training pipeline (aligned, same statistics) embed gives the features cache's pooled
    features and ROI embeddings of the same windows; the bundle as an evaluation encoder gives the same cache as the
    checkpoint."""
    from brainjepa.cli import main
    from brainjepa.evaluate.features import read_features, run_features
    from brainjepa.models.embed import read_embeddings

    root, frame, final, bundle = trained
    run_features({"kind": "checkpoint", "path": str(final)}, root / "shards", ["c"], tmp_path / "ckpt.npz")
    run_features({"kind": "bundle", "path": str(bundle)}, root / "shards", ["c"], tmp_path / "bundle.npz")
    cache, via_bundle = read_features(tmp_path / "ckpt.npz"), read_features(tmp_path / "bundle.npz")
    np.testing.assert_array_equal(cache["pooled"], via_bundle["pooled"])
    assert via_bundle["meta"]["source"]["kind"] == "bundle"

    evaluated = frame[frame["split"] != "pretrain"]
    sheet = tmp_path / "samples.tsv"
    evaluated.assign(timeseries=evaluated["path"])[["cohort", "subject", "session", "run", "timeseries"]].to_csv(
        sheet, sep="\t", index=False)
    assert main(["embed", "--model", str(bundle), "--sheet", str(sheet), "--out", str(tmp_path / "e.parquet"),
                 "--roi-embeddings", "--device", "cpu", "--batch-size", "3", "--no-progress"]) == 0
    got, meta = read_embeddings(tmp_path / "e.parquet")
    assert meta["roi_names"] == [f"roi{i}" for i in range(R)]
    assert len(got["run_id"]) == len(cache["run_id"]) == len(evaluated) * (T // WINDOW)
    index = {(str(r), int(s)): i for i, (r, s) in enumerate(zip(got["run_id"], got["start"]))}
    order = [index[(str(r), int(s))] for r, s in zip(cache["run_id"], cache["start"])]
    np.testing.assert_allclose(got["pooled"][order], cache["pooled"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["roi_embeddings"][order], cache["roi_tokens"].astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(got["start_s"], got["start"] * 2.0)

    # the same through --timeseries: run ids are the files
    one = evaluated["path"].iloc[0]
    assert main(["embed", "--model", str(bundle), "--timeseries", one, "--out", str(tmp_path / "one.parquet"),
                 "--device", "cpu", "--no-progress"]) == 0
    single, _ = read_embeddings(tmp_path / "one.parquet")
    assert set(single["run_id"]) == {one} and single["pooled"].shape == (T // WINDOW, 32)
    mine = [index[(evaluated["run_id"].iloc[0], int(s))] for s in single["start"]]
    np.testing.assert_allclose(single["pooled"], got["pooled"][mine], rtol=1e-5, atol=1e-6)


def test_embed_refuses_other_rois_a_coarse_tr_and_a_short_run_naming_the_file(trained, tmp_path):
    from brainjepa.models.embed import RunInput, embed

    root, _, _, bundle = trained
    rng = np.random.default_rng(1)
    names = [f"roi{i}" for i in range(R)]
    cases = {
        "rois.parquet": (names[:-2] + ["foo"], 2.0, T),    # two missing, one extra
        "coarse.parquet": (names, 3.0, T),                 # TR 3 s cannot reach 2 s by striding
        "short.parquet": (names, 2.0, WINDOW - 4),         # shorter than a window
    }
    for name, (columns, tr, length) in cases.items():
        write_timeseries(rng.normal(5, 1, size=(length, len(columns))).astype(np.float32), columns, tmp_path / name,
                         {"tr": tr})

    def refused(name: str) -> str:
        with pytest.raises(InputError) as info:
            embed(bundle, [RunInput(name, tmp_path / name)], tmp_path / "out.parquet", device="cpu", progress=False)
        assert str(tmp_path / name) in str(info.value) and not (tmp_path / "out.parquet").exists()
        return str(info.value)

    message = refused("rois.parquet")
    assert "'foo'" in message and "'roi6'" in message and "'roi7'" in message and "1 unknown" in message
    assert "2 missing" in message
    message = refused("coarse.parquet")
    assert "TR 3 s" in message and "2 s" in message
    message = refused("short.parquet")
    assert f"{WINDOW - 4} time points" in message and f"window of {WINDOW}" in message
    # a CSV with the ROIs in another order is matched by name; a 1 s run reaches 2 s by striding
    frame, _ = read_timeseries(root / "runs" / "r04.parquet")
    frame[names[::-1]].to_csv(tmp_path / "reordered.csv", index=False)
    embed(bundle, [RunInput("csv", tmp_path / "reordered.csv", 2.0)], tmp_path / "csv.parquet", device="cpu",
          progress=False)
    doubled = np.repeat(frame.to_numpy(), 2, axis=0)
    write_timeseries(doubled, names, tmp_path / "fast.parquet", {"tr": 1.0})
    embed(bundle, [RunInput("fast", tmp_path / "fast.parquet"), RunInput("r04", root / "runs" / "r04.parquet")],
          tmp_path / "fast_out.parquet", device="cpu", progress=False)
    from brainjepa.models.embed import read_embeddings

    fast, _ = read_embeddings(tmp_path / "fast_out.parquet")
    np.testing.assert_allclose(fast["pooled"][fast["run_id"] == "fast"], fast["pooled"][fast["run_id"] == "r04"],
                               rtol=1e-5, atol=1e-6)
    csv, _ = read_embeddings(tmp_path / "csv.parquet")
    np.testing.assert_allclose(csv["pooled"], fast["pooled"][fast["run_id"] == "r04"], rtol=1e-4, atol=1e-5)


def test_a_converted_official_checkpoint_becomes_a_bundle_that_evaluates(trained, tmp_path):
    """The synthetic released-layout checkpoint -> convert-checkpoint --bundle (its statistics supplied, or a
    per-sample method named) -> the evaluation harness's features and a closed-form probe."""
    from test_convert import official_checkpoint, official_shapes

    from brainjepa.cli import main
    from brainjepa.evaluate.features import run_features
    from brainjepa.evaluate.run import run_evaluation
    from brainjepa.evaluate.tasks import TaskConfig

    root, _, _, _ = trained
    shapes = official_shapes(dim=384, depth=1, pdim=192, pdepth=1, rois=R, patches=WINDOW // 16, grads=4)
    torch.save(official_checkpoint(shapes), tmp_path / "official.pth")
    common = ["convert-checkpoint", "--official", str(tmp_path / "official.pth"), "--gradients",
              str(root / "gradients.tsv"), "--bundle", "--tr", "2.0"]
    assert main([*common, "--out", str(tmp_path / "none")]) == 1          # no statistics and no method: refused
    assert not (tmp_path / "none").exists()
    assert main([*common, "--scaling-method", "subject_mean", "--out", str(tmp_path / "none")]) == 1
    assert main([*common, "--scaling-stats", str(root / "stats.json"), "--labels", str(root / "labels.tsv"),
                 "--out", str(tmp_path / "official")]) == 0
    config = json.loads((tmp_path / "official" / "config.json").read_text())
    assert config["input"]["scaling_source"].startswith("supplied: stats.json") and config["embed_dim"] == 384
    assert main([*common, "--scaling-method", "roi_zscore", "--out", str(tmp_path / "zscored")]) == 0
    zscored = json.loads((tmp_path / "zscored" / "config.json").read_text())["input"]
    assert zscored["scaling_method"] == "roi_zscore" and zscored["scaling_source"].startswith("method")
    spec = {"kind": "bundle", "path": str(tmp_path / "official")}
    run_features(spec, root / "shards", ["c"], tmp_path / "f.npz")
    age = TaskConfig.from_dict("age", {"cohorts": ["c"], "label": "age", "kind": "regression"})
    record = run_evaluation(age, "official_closed_form", 0, root / "shards", tmp_path / "cf.json",
                            features=[tmp_path / "f.npz"])
    assert record["encoder"] == "official" and np.isfinite(record["test"]["mse"])


def test_evaluation_refuses_a_bundle_of_other_rois(trained, tmp_path):
    from brainjepa.evaluate.encoders import load_encoder

    _, _, _, bundle = trained
    with pytest.raises(InputError, match="ROI names/order differ"):
        load_encoder({"kind": "bundle", "path": str(bundle)}, [f"x{i}" for i in range(R)], WINDOW)
    with pytest.raises(InputError, match=f"windows of {WINDOW} time steps"):
        load_encoder({"kind": "bundle", "path": str(bundle)}, [f"roi{i}" for i in range(R)], 2 * WINDOW)
    encoder, source = load_encoder({"kind": "bundle", "path": str(bundle)}, [f"roi{i}" for i in range(R)], WINDOW)
    assert source["tr"] == 2.0 and encoder.training


def test_export_model_cli_refuses_other_statistics_and_keeps_the_old_bundle(trained, tmp_path):
    from brainjepa.cli import main

    root, _, final, bundle = trained
    other = ScalingStats("subject_mean", tuple(f"roi{i}" for i in range(R)), np.zeros(R), np.ones(R), 3)
    write_scaling_stats(other, tmp_path / "other.json")
    out = tmp_path / "model"
    assert main(["export-model", "--checkpoint", str(final), "--out", str(out), "--with-predictor",
                 "--metrics", str(tmp_path / "absent.tsv")]) == 0
    before = (out / "model.safetensors").read_bytes()
    from safetensors.torch import load_file

    assert any(k.startswith("predictor.") for k in load_file(str(out / "model.safetensors")))
    assert main(["export-model", "--checkpoint", str(final), "--out", str(out),
                 "--scaling-stats", str(tmp_path / "other.json")]) == 1
    assert (out / "model.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]


def test_the_model_card_has_the_monitors_and_the_evaluation_summary(trained, tmp_path):
    from brainjepa.models.bundle import export_model

    root, _, final, _ = trained
    pd.DataFrame({"step": [0, 10], "epoch": [0, 1], "target_rankme_pooled": [8.0, 3.0]}).to_csv(
        tmp_path / "monitors.csv", index=False)
    pd.DataFrame({"task": ["age", "age", "age"], "kind": "regression", "method": ["tiny_linprobe", "tiny_linprobe",
                                                                                 "random_linprobe"],
                  "seed": [0, 1, 0], "test_r": [0.5, 0.7, 0.1], "test_mse": [0.9, 0.7, 1.0],
                  "test_auroc": [None, None, 0.6]}).to_csv(
        tmp_path / "metrics.tsv", sep="\t", index=False)
    paired = [("age", "tiny_linprobe", "random_linprobe", seed, "r", delta, delta - 0.05, delta + 0.05, delta > 0.05)
              for seed, delta in enumerate([0.2, 0.1, 0.3])]
    paired += [("age", "tiny_linprobe", "fc_linear", None, "r", -0.4, -0.5, -0.3, False),   # FC: no seed
               ("sex", "tiny_closed_form", "random_closed_form", 0, "balanced_accuracy", 0.01, -0.1, 0.12, False),
               ("sex", "tiny_closed_form", "random_closed_form", 0, "auroc", 0.2, 0.1, 0.3, True)]
    pd.DataFrame(paired, columns=["task", "method", "versus", "versus_seed", "metric", "delta", "ci_low", "ci_high",
                                  "beats"]).to_csv(tmp_path / "paired.tsv", sep="\t", index=False)
    out = export_model(final, tmp_path / "tiny", monitors=tmp_path / "monitors.csv", metrics=tmp_path / "metrics.tsv",
                       encoder_name="tiny", paired=tmp_path / "paired.tsv")
    card = (out / "README.md").read_text()
    assert "| target_rankme_pooled | 3 | 8 |" in card and "NARROWED" in card
    assert "| age | tiny_linprobe | 2 | 0.6 | 0.8 |" in card and "| age | random_linprobe" not in card
    assert "| task | method | seeds | r | mse |" in card      # no column that is empty for this encoder's rows
    # against random init: the worst of the seeds with its interval, FC baselines and non-headline metrics left out
    assert "| age | tiny_linprobe | r | random_linprobe | 3 | +0.100 [+0.050, +0.150] | yes |" in card
    assert ("| sex | tiny_closed_form | balanced_accuracy | random_closed_form | 1 | +0.010 [-0.100, +0.120] | no |"
            in card)
    assert "fc_linear" not in card and "auroc" not in card
    assert "It beats every random initialisation on: age (tiny_linprobe)." in card


def test_import_brainjepa_stays_light():
    import subprocess
    import sys

    code = "import sys, brainjepa; assert 'torch' not in sys.modules; assert callable(brainjepa.load_model)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_demo_workflow_exports_a_bundle_per_pretraining_run_and_evaluates_a_bundle_encoder(tmp_path):
    """`all` exports one bundle per pretraining run (jepa, mae); an evaluate.encoders entry {bundle: path} reads the
    bundle's files (here the workflow's own export, so its features wait for export_model)."""
    import yaml
    from test_workflow import REPO, dry_run_jobs, job_counts, snakemake

    overlay = tmp_path / "bundle.yaml"
    shared = {"bundle": "results/models/brainjepa_tiny"}
    overlay.write_text(yaml.safe_dump({"evaluate": {"encoders": {"shared": shared}}}))
    result = snakemake(REPO, "-n", "-p", "--forceall", "all", "--configfile", str(REPO / "config/config.yaml"),
                       str(overlay))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout)["export_model"] == 2
    jobs = dry_run_jobs(result.stdout)
    export = jobs["results/models/brainjepa_tiny/model.safetensors"]
    assert export["rule"] == "export_model" and "--tr-alignment stride --target-tr 2.0" in export["shell"]
    features = jobs["results/evaluate/features/shared/ukbsim.npz"]
    assert '"kind": "bundle", "path": "results/models/brainjepa_tiny"' in features["shell"]
    assert any(out.startswith("results/evaluate/sex/shared_closed_form/") for out in jobs)
    # a bundle of this workflow is an encoder: its card cannot wait for the evaluation (a cycle), so it quotes none
    assert "--metrics" not in export["shell"]


def test_the_workflow_bundle_of_an_evaluated_run_waits_for_its_evaluation_and_quotes_it():
    from test_workflow import REPO, dry_run_jobs, snakemake

    result = snakemake(REPO, "-n", "-p", "--forceall", "results/models/brainjepa_tiny/README.md")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dry_run_jobs(result.stdout)
    export = jobs["results/models/brainjepa_tiny/model.safetensors"]
    assert ("--metrics results/metrics.tsv --paired results/tables/paired.tsv --encoder-name jepa"
            in export["shell"])
    assert "results/metrics.tsv" in jobs and "results/tables/paired.tsv" in result.stdout
