"""TR alignment: the paper's stride and anti-aliased resampling."""

from __future__ import annotations

import numpy as np
import pytest

from brainjepa.cli import main
from brainjepa.io import read_timeseries, write_timeseries
from brainjepa.preprocess.align_tr import align_tr, stride_for


@pytest.mark.parametrize("tr,stride", [(0.735, 3), (0.72, 3), (0.8, 2), (2.0, 1), (3.0, 1), (1.0, 2)])
def test_stride_factor(tr, stride):
    assert stride_for(tr, 2.0) == stride


def test_stride_ukb_gives_164_steps_at_2205ms():
    ts = np.arange(490 * 2, dtype=float).reshape(490, 2)
    out, tr = align_tr(ts, 0.735, 2.0, "stride")
    assert out.shape == (164, 2) and tr == pytest.approx(2.205)
    np.testing.assert_array_equal(out[:, 0], ts[::3, 0])


def test_resample_hits_target_tr_exactly_and_keeps_slow_signal():
    tr, n = 0.735, 490
    t = np.arange(n) * tr
    slow = np.sin(2 * np.pi * 0.03 * t)  # 0.03 Hz: well below the new Nyquist (0.25 Hz)
    out, new_tr = align_tr(slow[:, None], tr, 2.0, "resample")
    assert new_tr == pytest.approx(2.0, abs=1e-12)
    assert len(out) == int(np.ceil(n * tr / 2.0))
    t_new = np.arange(len(out)) * new_tr
    inner = slice(5, -5)  # away from the edges
    np.testing.assert_allclose(out[inner, 0], np.sin(2 * np.pi * 0.03 * t_new)[inner], atol=0.03)


def test_resample_removes_what_stride_aliases():
    tr, n = 0.735, 2000
    t = np.arange(n) * tr
    fast = np.sin(2 * np.pi * 0.4 * t)[:, None]  # 0.4 Hz: above the 2 s Nyquist, aliases under decimation
    strided, _ = align_tr(fast, tr, 2.0, "stride")
    resampled, _ = align_tr(fast, tr, 2.0, "resample")
    assert strided[20:-20].std() > 0.5
    assert resampled[20:-20].std() < 0.05


def test_resample_identity_when_tr_matches():
    ts = np.random.default_rng(0).normal(size=(50, 3))
    out, tr = align_tr(ts, 2.0, 2.0, "resample")
    np.testing.assert_array_equal(out, ts)
    assert tr == 2.0


def test_align_tr_cli_records_actual_tr(tmp_path):
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    write_timeseries(np.ones((490, 3), np.float32), ["a", "b", "c"], src, {"tr": 0.735})
    assert main(["align-tr", "--in", str(src), "--out", str(dst), "--target-tr", "2.0", "--method", "stride"]) == 0
    frame, meta = read_timeseries(dst)
    assert frame.shape == (164, 3) and list(frame.columns) == ["a", "b", "c"]
    assert meta["tr"] == pytest.approx(2.205) and meta["source_tr"] == pytest.approx(0.735)
    assert meta["tr_alignment"] == "stride" and meta["target_tr"] == 2.0
    assert main(["align-tr", "--in", str(src), "--out", str(dst), "--target-tr", "2.0", "--method", "resample"]) == 0
    assert read_timeseries(dst)[1]["tr"] == pytest.approx(2.0)


def test_unknown_method():
    with pytest.raises(ValueError, match="stride"):
        align_tr(np.zeros((4, 1)), 1.0, 2.0, "nearest")


def test_align_tr_cli_many_runs_in_one_call(tmp_path, capsys):
    sources = [tmp_path / f"in{i}.parquet" for i in range(3)]
    for i, src in enumerate(sources):
        write_timeseries(np.full((490, 2), i, np.float32), ["a", "b"], src, {"tr": 0.735})
    outs = [tmp_path / "out" / f"o{i}.parquet" for i in range(3)]
    args = ["align-tr", "--in", *map(str, sources), "--out", *map(str, outs), "--target-tr", "2.0"]
    assert main(args) == 0
    assert [read_timeseries(o)[0].iloc[0, 0] for o in outs] == [0, 1, 2]
    sources[1].write_text("garbage")
    capsys.readouterr()
    assert main(args) == 1
    assert f"run {sources[1]}: {sources[1]}: cannot read" in capsys.readouterr().err  # names the run that failed
    assert main(["align-tr", "--in", *map(str, sources), "--out", str(outs[0]), "--target-tr", "2.0"]) == 1
    assert "3 input files but 1 output files" in capsys.readouterr().err


def test_stride_refuses_a_target_below_the_tr(tmp_path, capsys):
    """Decimation cannot shorten the TR: a 3 s run with a 2 s target was kept at 3 s without a word."""
    from brainjepa.errors import InputError

    with pytest.raises(InputError, match=r"TR 3 s is longer than the target TR 2 s.*'resample'"):
        align_tr(np.ones((50, 2)), 3.0, 2.0, "stride")
    assert align_tr(np.ones((50, 2)), 2.0005, 2.0, "stride")[0].shape == (50, 2)     # equal up to rounding: kept
    assert align_tr(np.ones((50, 2)), 3.0, 2.0, "resample")[1] == pytest.approx(2.0)
    src, dst = tmp_path / "slow.parquet", tmp_path / "out.parquet"
    write_timeseries(np.ones((50, 3), np.float32), ["a", "b", "c"], src, {"tr": 3.0})
    assert main(["align-tr", "--in", str(src), "--out", str(dst), "--target-tr", "2.0", "--method", "stride"]) == 1
    err = capsys.readouterr().err
    assert "slow.parquet" in err and "longer than the target TR" in err and not dst.exists()


def test_align_tr_refuses_an_implausible_tr_in_its_input(tmp_path, capsys):
    """A run file whose TR is a millisecond value (2000 s) was resampled to 200,000 time points, exit 0."""
    src, dst = tmp_path / "ms.parquet", tmp_path / "out.parquet"
    write_timeseries(np.ones((200, 3), np.float32), ["a", "b", "c"], src, {"tr": 2000.0})
    assert main(["align-tr", "--in", str(src), "--out", str(dst), "--target-tr", "2", "--method", "resample"]) == 1
    err = capsys.readouterr().err
    assert f"{src}: TR 2000 s from its metadata 'tr'" in err and "looks like milliseconds: 2 s?" in err
    assert not dst.exists()


def test_resample_refuses_an_output_beyond_its_bound_before_allocating(tmp_path, capsys):
    """A target TR far below the run's (a unit slip in the target) would interpolate a run into a huge one."""
    from brainjepa.errors import InputError
    from brainjepa.preprocess.align_tr import MAX_RESAMPLED_TIMEPOINTS, MAX_UPSAMPLING

    with pytest.raises(InputError) as info:
        align_tr(np.ones((50, 2)), 2.0, 0.002, "resample", source="run.parquet")
    assert str(info.value).startswith("run.parquet: resampling from TR 2 s to the target TR 0.002 s would turn "
                                      "50 time points into 50000")
    assert f"at most {MAX_UPSAMPLING} times" in str(info.value)
    assert len(align_tr(np.ones((50, 2)), 30.0, 1.0, "resample")[0]) == 1500          # 30x: the bound, kept
    long = np.ones((MAX_RESAMPLED_TIMEPOINTS // 2 + 1, 1))
    with pytest.raises(InputError, match=f"more than {MAX_RESAMPLED_TIMEPOINTS} time points"):
        align_tr(long, 2.0, 1.0, "resample")
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    write_timeseries(np.ones((50, 3), np.float32), ["a", "b", "c"], src, {"tr": 2.0})
    assert main(["align-tr", "--in", str(src), "--out", str(dst), "--target-tr", "0.002", "--method", "resample"]) == 1
    err = capsys.readouterr().err
    assert f"{src}: resampling from TR 2 s to the target TR 0.002 s" in err and not dst.exists()
