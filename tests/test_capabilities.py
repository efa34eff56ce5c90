"""BrainLM's capabilities in the harness: their config, methods, and their rows in metrics.tsv and the tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainjepa.errors import InputError
from brainjepa.evaluate.capabilities import CAPABILITIES, CapabilityConfig
from brainjepa.evaluate.metrics import bootstrap_subject_mean
from brainjepa.evaluate.summary import metrics_table, run_summary, task_tables


def test_methods_of_each_capability():
    forecast = CapabilityConfig.from_dict("forecast", {"cohorts": ["ukb"], "encoders": ["jepa", "random"],
                                                       "baselines": ["persistence", "ar"]}, ["jepa", "random"])
    assert forecast.methods() == ["jepa_finetune", "random_finetune", "persistence", "ar"]
    assert forecast.parse_method("random_finetune") == ("random", None)
    assert forecast.parse_method("ar") == (None, None)
    netid = CapabilityConfig.from_dict("network_id", {"cohorts": ["ukb"], "encoders": ["jepa"],
                                                      "features": ["embedding", "attention"], "baselines": ["raw"]})
    assert netid.methods() == ["jepa_embedding", "jepa_attention", "raw"]
    assert netid.parse_method("jepa_attention") == ("jepa", "attention")
    assert netid.parse_method("raw") == (None, "raw")
    perturbation = CapabilityConfig.from_dict("perturbation", {"cohorts": ["adni"], "encoders": ["jepa", "mae"]})
    assert perturbation.methods() == ["jepa", "mae"]
    with pytest.raises(InputError, match="no method 'jepa_finetune'"):
        perturbation.parse_method("jepa_finetune")


@pytest.mark.parametrize("name, spec, message", [
    ("forecasting", {"cohorts": ["a"]}, "unknown capability"),
    ("forecast", {"cohorts": []}, "at least one cohort"),
    ("forecast", {"cohorts": ["a"], "baselines": ["arima"]}, r"baselines: \['arima'\] unknown"),
    ("forecast", {"cohorts": ["a"], "encoders": ["bert"]}, r"encoders: \['bert'\] are not entries"),
    ("network_id", {"cohorts": ["a"], "encoders": ["jepa"]}, "no features"),
    ("reconstruction", {"cohorts": ["a"]}, "no methods"),
    ("forecast", {"cohorts": ["a"], "horizon": 20}, "horizon"),
])
def test_bad_capability_configs_name_the_key(name, spec, message):
    with pytest.raises(InputError, match=message):
        CapabilityConfig.from_dict(name, spec, ["jepa"])


def _record(task, kind, method, seed, test, per_subject=None):
    return {"task": task, "kind": kind, "method": method, "seed": seed, "cohorts": ["ukb"], "label": None,
            "source": None, "n_subjects": {"train": 6, "val": 2, "test": 4}, "val": {}, "test": test,
            "per_subject": per_subject or {}, "details": {}, "selected": {"epoch": None, "history": []},
            "seconds": 0.1}


def test_subject_bootstrap_brackets_the_mean_and_needs_equal_subjects():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.6, 0.1, 40), rng.normal(0.6, 0.1, 40)
    lo, hi = bootstrap_subject_mean([a, b])
    assert lo < np.mean((a + b) / 2) < hi
    assert bootstrap_subject_mean([a, b[:10]]) is None
    assert bootstrap_subject_mean([]) is None


def test_capability_rows_join_metrics_tsv_and_get_their_tables(tmp_path):
    import json

    records = [_record("forecast", "forecast", m, s, {"r2": r2 + 0.01 * s, "r": 0.5, "mse": 0.7},
                       {"mse": [0.6, 0.7, 0.8, 0.9]})
               for m, r2 in (("jepa_finetune", 0.08), ("persistence", -0.4)) for s in (0, 1)]
    records += [_record("network_id", "network_id", "raw", s, {"accuracy": 0.4, "balanced_accuracy": 0.35},
                        {"accuracy": [0.3, 0.4, 0.5, 0.4]}) for s in (0, 1)]
    table = metrics_table(records)
    assert set(table["kind"]) == {"forecast", "network_id"}
    assert table.loc[table["method"] == "persistence", "test_r2"].tolist() == [-0.4, -0.39]
    tables = task_tables(records, n_boot=200)
    assert "| persistence | 2 | -0.395 (0.005) | 0.500 (0.000) | 0.700 (0.000) [0.650, 0.850] |" in tables["forecast"]
    assert "| raw | 2 | 40.00 (0.00) [" in tables["network_id"]
    assert "## BrainLM's capabilities" in tables["summary"]
    assert "| forecast | jepa_finetune | 2 | R2 0.085 (0.005) |" in tables["summary"]
    paths = []
    for i, r in enumerate(records):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    run_summary(paths, tmp_path / "metrics.tsv", tmp_path / "tables", n_boot=50)
    assert len(pd.read_csv(tmp_path / "metrics.tsv", sep="\t")) == 6
    assert (tmp_path / "tables" / "network_id.md").exists()


def test_figures_read_task_rows_unless_asked_for_capabilities(tmp_path):
    from brainjepa.figures.evaluation import read_metrics

    frame = pd.DataFrame([{"task": "age", "kind": "regression", "method": "fc_linear", "seed": 0, "test_r": 0.5},
                          {"task": "forecast", "kind": "forecast", "method": "ar", "seed": 0, "test_r2": 0.1}])
    frame.to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    assert read_metrics(tmp_path / "m.tsv")["task"].tolist() == ["age"]
    assert read_metrics(tmp_path / "m.tsv", capabilities=True)["task"].tolist() == ["age", "forecast"]


def test_every_capability_has_a_command_and_a_main_metric():
    assert {c.command for c in CAPABILITIES.values()} == {"forecast", "network-id", "perturbation", "reconstruction"}
    assert all(c.metrics for c in CAPABILITIES.values())


def _records(tmp_path) -> list:
    """Capability records of every figure panel (two seeds each) and one perturbation record, as JSON files."""
    import json

    rng = np.random.default_rng(0)
    paths = []

    def write(task, method, seed, test, details):
        path = tmp_path / task / method / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"task": task, "method": method, "seed": seed, "test": test, "details": details}))
        paths.append(path)

    for seed in (0, 1):
        for method in ("jepa_finetune", "persistence"):
            curve = list(np.linspace(0.5, 0.0, 8) + 0.01 * rng.standard_normal(8))
            write("forecast", method, seed, {"r2": float(np.mean(curve))},
                  {"per_step": {"test": {"r2": curve}, "val": {"r2": curve}}})
        write("network_id", "jepa_embedding", seed, {"accuracy": 0.6 + 0.1 * seed},
              {"chance": {"uniform": 0.125}, "position_only": {"accuracy": 0.4}})
        write("network_id", "raw", seed, {"accuracy": 0.5}, {"chance": {"uniform": 0.125}, "position_only": None})
        write("reconstruction", "mae", seed, {"r2_mask20": 0.4, "r2_mask50": 0.35, "r2_mask75": 0.3},
              {"mask_ratios": [0.2, 0.5, 0.75]})
        write("perturbation", "jepa", seed, {"closed_share": 0.9}, {})
    return paths


def test_capabilities_figure_draws_each_capability_from_its_records(tmp_path):
    from test_figures import assert_real_image

    from brainjepa.figures.capabilities import plot_capabilities, read_records

    records = read_records(_records(tmp_path / "r"))
    assert {c: sorted(m) for c, m in records.items()} == {
        "forecast": ["jepa_finetune", "persistence"], "network_id": ["jepa_embedding", "raw"],
        "reconstruction": ["mae"], "perturbation": ["jepa"]}
    assert all(len(seeds) == 2 for methods in records.values() for seeds in methods.values())
    assert plot_capabilities(records, tmp_path / "a.png") == ["forecast", "network_id", "reconstruction"]
    plot_capabilities(records, tmp_path / "b.png")
    assert_real_image(tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert plot_capabilities({"reconstruction": records["reconstruction"]}, tmp_path / "c.png") == ["reconstruction"]
    with pytest.raises(InputError, match="no forecast, network_id or reconstruction record.*perturbation"):
        plot_capabilities({"perturbation": records["perturbation"]}, tmp_path / "d.png")


def test_capabilities_figure_names_a_bad_record(tmp_path):
    from brainjepa.figures.capabilities import plot_capabilities, read_records

    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match="x.json: cannot read"):
        read_records([tmp_path / "x.json"])
    (tmp_path / "y.json").write_text('{"task": "forecast"}')
    with pytest.raises(InputError, match="y.json: not a capability record"):
        read_records([tmp_path / "y.json"])
    (tmp_path / "z.json").write_text('{"task": "forecast", "method": "ar", "test": {}, "details": {}}')
    with pytest.raises(InputError, match="forecast/ar: a record lacks details.per_step.test.r2"):
        plot_capabilities(read_records([tmp_path / "z.json"]), tmp_path / "z.png")


def test_perturbation_tables_of_several_seeds_are_averaged_per_roi(tmp_path):
    from brainjepa.figures.perturbation import mean_roi_tables

    names = ["A_1", "B_2", "C_3"]
    for seed, scale in ((0, 1.0), (1, 3.0)):
        pd.DataFrame({"name": names, "network": ["N1", "N1", "N2"], "magnitude": [scale * v for v in (1, 2, 3)],
                      "control_magnitude": [scale] * 3}).to_csv(tmp_path / f"s{seed}.tsv", sep="\t", index=False)
    mean = mean_roi_tables([tmp_path / "s0.tsv", tmp_path / "s1.tsv"])
    assert list(mean["name"]) == names and list(mean["network"]) == ["N1", "N1", "N2"]
    assert mean["magnitude"].tolist() == [2.0, 4.0, 6.0] and mean["control_magnitude"].tolist() == [2.0] * 3
    pd.DataFrame({"name": names[::-1], "network": ["N2", "N1", "N1"], "magnitude": [1.0] * 3}).to_csv(
        tmp_path / "other.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="other.tsv: its ROIs differ"):
        mean_roi_tables([tmp_path / "s0.tsv", tmp_path / "other.tsv"])
    pd.DataFrame({"name": names}).to_csv(tmp_path / "bare.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"bare.tsv: the perturbation ROI table lacks column\(s\) \['network'"):
        mean_roi_tables([tmp_path / "bare.tsv"])


def test_the_capability_record_has_the_documented_fields(tmp_path):
    """docs/formats.md's capability record: these fields, written by Record.write as JSON."""
    import json

    from brainjepa.evaluate.record import KEYS, Record

    assert KEYS == {"task", "kind", "method", "seed", "cohorts", "label", "source", "n_subjects", "val", "test",
                    "per_subject", "details", "selected", "seconds"}
    record = Record("forecast", "forecast", "ar", 0, ["c"], None, None, {"train": 1, "val": 1, "test": 1},
                    {"r2": 0.5}, {"r2": 0.25}, {"mse": [1.0]}, {}, {"epoch": None, "history": []}, 0.1)
    assert record.write(tmp_path / "r.json") == json.loads((tmp_path / "r.json").read_text())
    assert set(json.loads((tmp_path / "r.json").read_text())) == KEYS

