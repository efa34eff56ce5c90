"""The offline demo cohort: synthetic fMRIPrep-like derivatives with planted phenotypes.

Everything is generated deterministically from one integer seed. The layout mimics fMRIPrep
(``derivatives/<cohort>/sub-*/ses-*/func/*_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz`` with a
JSON sidecar and, optionally, the brain mask) on a coarse 8 mm MNI grid (23 x 28 x 23 voxels, FSL
MNI152 orientation), so the whole demo is small and fast. A cohort can instead come as already-parcellated
ROI time series, as UK Biobank distributes them (``timeseries`` cohorts: one ``.npy`` T x 64 float32 file
per run, ``..._atlas-Demo_timeseries.npy``, listed in the sheet's ``timeseries`` column with the TR in its
``tr`` column): the ROI means that parcellating the same run's NIfTI would give, in scanner units.

Atlas
    The "brain" is an ellipsoid in MNI mm (x +-70, y -105..70, z -50..80; about 3,300 voxels).
    Its outer shell is the cortex, split into 56 parcels (7 Yeo networks x 2 hemispheres x 4), labelled
    in Schaefer order (1-28 left, 29-56 right, ``7Networks_LH_Vis_1`` ...). Networks are balanced
    Voronoi (power-diagram) cells of one seed per network and hemisphere placed in its usual lobe
    (mirror images, jittered by the seed, moved onto the shell): about 168 voxels each, connected.
    Each network is cut into 4 equal slabs along its long axis (about 42 voxels per parcel, always
    >= 20). A core ellipsoid holds 8 Tian-style subcortical ROIs (HIP, THA, PUT, CAU; right = x > 0;
    about 20 voxels each). Voxels between shell and core are unlabelled "white matter".

Signal model (per run; times in seconds, so every TR sees the same dynamics)
    * Latent processes are AR(1) series with correlation time ``TAU_S`` = 4 s (an Ornstein-Uhlenbeck
      process, phi = exp(-step/tau)) on a fine grid of <= 0.25 s, smoothed by a Gaussian of
      ``SMOOTH_S`` = 1 s, rescaled to unit variance and sampled at the TR: the same process in
      seconds for every TR.
    * 8 network latents (7 cortical + subcortical) are mixed by the Cholesky factor of an 8 x 8
      network correlation matrix (between-network coupling, e.g. Default <-> DorsAttn negative); each
      network and hemisphere adds a small hemisphere-specific part (``HEMI_SHARE``).
    * ROI signal x_r = w_r * network + g_r . globals (2 shared global components) + sqrt(rest) * AR
      noise of the ROI, unit variance. The expected correlation of two ROIs of one network is about
      w^2 + g.g, which is the "within-network correlation" that the phenotypes move.
    * Voxel = baseline (smooth map, 500-1000) * (1 + psc * amplitude_net * x_r / 100) + white noise,
      with psc ~ 1 % and thermal tSNR 60-110 (total tSNR about 50-90). Unlabelled brain voxels carry
      only a weak copy of the global components. Outside the brain the data are exactly zero.
      ``amplitude_net`` is the subject's fluctuation amplitude of the network (below).
    * Values are rounded to 1/16 (far below the noise, about 8) so the gzip files stay small.
    * A time-series run is the ROI mean of that model computed at the ROI level: the same ROI signals and
      scanner gain (the same random draws), mean baseline and mean baseline x psc of the ROI's voxels, and
      the mean of their white noise drawn directly (sd sqrt(sum sd_v^2) / n_voxels): in distribution exactly
      what parcellating the NIfTI gives, up to the 1/16 rounding.

Planted phenotypes (age fraction a = (age - 45) / 45, clipped to 0..1)
    * age, connectivity: within-network correlation 0.60 - 0.30 a (cortex; subcortex 0.45 - 0.15 a), and
      the Default <-> DorsAttn network correlation -(0.45 - 0.30 a) (anticorrelation weakens with age);
    * age, amplitude: every ROI's fluctuation amplitude x exp(-0.30 a) (``AGE_LOG_AMPLITUDE``): 26 % lower
      at 90 than at 45 years, about 0.6 % a year. Beside it each subject has a global log-amplitude offset of
      sd 0.15 (``SUBJECT_LOG_AMPLITUDE_SD``: vascular and physiological sources unrelated to age), so a
      subject's mean ROI amplitude correlates with age at about r = -0.4 over the ukbsim ages 45-80 (the
      realised value: ``bench/experiments/demo_effects.py``). That is the order reported for real data: in UK
      Biobank the resting-state node amplitudes are among the imaging measures most strongly associated with age
      (Miller et al., Nat Neurosci 2016), and the resting-state fluctuation amplitude declines with age
      (Tsvetanov et al., J Neurosci 2016), with correlations with age of roughly -0.3 to -0.5;
    * sex: amplitude of SomMot x exp(+0.08 s), Vis x exp(-0.08 s), s = +1 for M, -1 for F (the
      SomMot / Vis amplitude ratio is 1.38 times higher in men; subject jitter sd 0.1 per network);
    * sex, connectivity: within-network correlation + 0.20 (``SEX_WITHIN``) in SomMot for men and in Default
      for women (UK Biobank: stronger default-mode connectivity in women, stronger sensorimotor connectivity in
      men, Ritchie et al., Cereb Cortex 2018; sex is classified from resting-state FC at 75-87 % accuracy,
      e.g. Zhang et al., Hum Brain Mapp 2018 on HCP), so that, as in real data, sex is in the FC too. Sized
      to that accuracy, measured: at + 0.05 a ridge on the demo's window FC stayed at chance; at + 0.10 the
      FC logistic regression reached test AUROC 0.76 and balanced accuracy at most 0.69 over its whole
      regularisation grid (the realised SomMot - Default contrast, men - women, 0.16 at sd 0.12: an ideal
      threshold on it separates 75 %), below the reported accuracies;
    * diagnosis = 1: Default within-network correlation - 0.15, Default <-> subcortex 0.30 -> 0.05, and the
      Default network's fluctuation amplitude x 0.85 (``DIAGNOSIS_DEFAULT_AMPLITUDE``; a reduced amplitude of
      low-frequency fluctuations, ALFF, in the posterior cingulate and precuneus is a common finding in mild
      cognitive impairment). A missing diagnosis (cohorts without the label) is simulated as 0.
    Subject idiosyncrasies (jitter of those correlations, ROI loadings, amplitudes, baseline and noise
    maps) come from a generator seeded by (seed, cohort, subject) and are shared by the subject's runs;
    the time courses come from (seed, cohort, subject, session, run). Seeds are numpy SeedSequences
    whose entropy is zlib.crc32 of the identifiers, never Python's hash().
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainjepa.bids import sidecar_path
from brainjepa.io import atomic_path, write_text_atomic

try:  # ISA-L compresses about 5x faster than zlib; same stream format
    from isal import igzip as _gzip
except ImportError:  # pragma: no cover - isal is a declared dependency
    import gzip as _gzip

DEMO_SPACE = "MNI152NLin6Asym"
NETWORKS = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")
SUBCORTICAL = ("HIP", "THA", "PUT", "CAU")
SAMPLE_COLUMNS = ["cohort", "subject", "session", "run", "bold", "mask", "timeseries", "tr"]
PHENOTYPE_COLUMNS = ["cohort", "subject", "age", "sex", "diagnosis"]

# Yeo 7-network colours as in the Schaefer 2018 label tables.
NETWORK_COLORS = ("#781180", "#4682B4", "#00760E", "#C43AFA", "#DCF8A4", "#E69422", "#CD3E4E")

TAU_S = 4.0  # correlation time of the AR(1) latents, seconds
SMOOTH_S = 1.0  # Gaussian smoothing of the latents (sigma), seconds
FINE_STEP_S = 0.25  # largest time step (seconds) on which the latents are generated before sampling
HEMI_SHARE = 0.1  # variance share of a network signal specific to one hemisphere
GLOBAL_SPAN = ((0.15, 0.25), (0.05, 0.15))  # ranges of the ROI loadings on the 2 global components
AGE_YOUNG, AGE_OLD = 45.0, 90.0  # ages (years) where the planted age effect starts and saturates
DIAGNOSIS_RATE = 0.4
SEX_WITHIN = 0.20  # within-network correlation raised by this: SomMot in men, Default in women
SEX_LOG_AMPLITUDE = 0.08  # log amplitude of SomMot raised (Vis lowered) by this for M, the reverse for F
AGE_LOG_AMPLITUDE = 0.30  # log amplitude of every ROI lowered by this times the age fraction
SUBJECT_LOG_AMPLITUDE_SD = 0.15  # sd of a subject's global log amplitude (sources unrelated to age)
DIAGNOSIS_DEFAULT_AMPLITUDE = 0.85  # Default-network amplitude factor with the diagnosis

_SHAPE = (23, 28, 23)
_AFFINE = np.array([[-8.0, 0, 0, 90], [0, 8, 0, -126], [0, 0, 8, -72], [0, 0, 0, 1]])
_BRAIN_CENTER, _BRAIN_RADII = np.array([0.0, -17.5, 15.0]), np.array([70.0, 87.5, 65.0])
_CORTEX_INNER = 0.62  # the cortex is the shell 0.62 <= r <= 1 of the brain ellipsoid
_CORE_CENTER, _CORE_RADII = np.array([0.0, -8.0, 2.0]), np.array([32.0, 30.0, 20.0])
# Left-hemisphere network seeds (mm), one per network in NETWORKS order; right = mirror (x -> -x).
_NETWORK_SEEDS_LH = np.array(
    [[-20, -100, 5], [-45, -20, 60], [-35, -65, 50], [-55, 0, 10],
     [-30, 25, -35], [-45, 40, 30], [-10, -45, 45]], dtype=float
)
# Right-hemisphere subcortical seeds (mm) in SUBCORTICAL order; left = mirror.
_SUBCORTICAL_SEEDS_RH = np.array([[26, -22, -14], [11, -18, 7], [25, 2, 0], [13, 12, 10]], dtype=float)
_COHORT_NAME = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class DemoCohort:
    """One simulated cohort. ``tr`` in seconds; ``age`` = (youngest, oldest) in years.

    ``timeseries``: runs come as parcellated ROI time series (``.npy``), not NIfTI (no mask then).
    """

    name: str
    tr: float
    n_volumes: int
    n_subjects: int
    sessions: int = 1
    age: tuple[float, float] = (45.0, 80.0)
    diagnosis: bool = False
    mask: bool = False
    timeseries: bool = False

    def __post_init__(self) -> None:
        where = f"demo cohort {self.name!r}"
        if not isinstance(self.name, str) or not _COHORT_NAME.match(self.name):
            raise ValueError(f"{where}: name must be letters and digits only (a BIDS-safe label)")
        if isinstance(self.tr, bool) or not isinstance(self.tr, (int, float)) or not self.tr > 0:
            raise ValueError(f"{where}: tr must be a positive number of seconds, got {self.tr!r}")
        for key, low in (("n_volumes", 10), ("n_subjects", 1), ("sessions", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
        age = self.age
        if len(age) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in age):
            raise ValueError(f"{where}: age must be [youngest, oldest] in years, got {age!r}")
        if not 0 <= age[0] < age[1]:
            raise ValueError(f"{where}: age range {list(age)} must satisfy 0 <= youngest < oldest")
        for key in ("diagnosis", "mask", "timeseries"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{where}: {key} must be true or false, got {getattr(self, key)!r}")
        if self.mask and self.timeseries:
            raise ValueError(f"{where}: a timeseries cohort has no brain masks (mask must be false)")


def cohorts_from_spec(spec: dict) -> list[DemoCohort]:
    """Cohorts from a mapping ``{name: {tr, n_volumes, n_subjects, sessions, age, diagnosis, mask, timeseries}}``.

    Unknown or missing keys raise ValueError naming the cohort and the key.
    """
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"demo cohort spec must be a non-empty mapping of name -> settings, got {spec!r}")
    allowed = {"tr", "n_volumes", "n_subjects", "sessions", "age", "diagnosis", "mask", "timeseries"}
    cohorts = []
    for name, settings in spec.items():
        if not isinstance(settings, dict):
            raise ValueError(f"demo cohort {name!r}: settings must be a mapping, got {settings!r}")
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise ValueError(f"demo cohort {name!r}: unknown key {unknown[0]!r} (allowed: {sorted(allowed)})")
        missing = sorted({"tr", "n_volumes", "n_subjects"} - set(settings))
        if missing:
            raise ValueError(f"demo cohort {name!r}: missing key {missing[0]!r}")
        kwargs = dict(settings)
        if "age" in kwargs:
            if not isinstance(kwargs["age"], (list, tuple)):
                raise ValueError(f"demo cohort {name!r}: age must be [youngest, oldest], got {kwargs['age']}")
            kwargs["age"] = tuple(kwargs["age"])
        cohorts.append(DemoCohort(name=name, **kwargs))
    return cohorts


def _rng(seed: int, *ids: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and string identifiers through zlib.crc32 (stable across runs)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    entropy = [int(seed)] + [zlib.crc32(str(i).encode("utf-8")) for i in ids]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _subject_ids(cohort: str, n: int) -> list[str]:
    """Subject labels unique across cohorts: the cohort name and a zero-padded number ("ukbsim0001")."""
    width = max(4, len(str(n)))
    return [f"{cohort}{i:0{width}d}" for i in range(1, n + 1)]


def _age_fraction(age: float) -> float:
    """Position of ``age`` (years) on the planted-effect scale: 0 at AGE_YOUNG, 1 at AGE_OLD."""
    return float(np.clip((age - AGE_YOUNG) / (AGE_OLD - AGE_YOUNG), 0.0, 1.0))


def _draw_phenotypes(cohort: DemoCohort, seed: int) -> pd.DataFrame:
    """Phenotype rows of one cohort: age (uniform, 0.1 y), balanced sex, diagnosis rising with age.

    Exactly round(0.4 n) subjects are positive, drawn without replacement with weights that grow
    with age (odds x 4.5 from youngest to oldest), so a small cohort still has both classes.
    """
    rng = _rng(seed, "phenotypes", cohort.name)
    n = cohort.n_subjects
    age = np.round(rng.uniform(cohort.age[0], cohort.age[1], size=n), 1)
    sex = rng.permutation(np.array(["F", "M"] * (n // 2 + 1))[:n])
    frame = pd.DataFrame({"cohort": cohort.name, "subject": _subject_ids(cohort.name, n), "age": age, "sex": sex})
    diagnosis = pd.array([pd.NA] * n, dtype="Int64")
    if cohort.diagnosis:
        n_pos = int(np.clip(round(DIAGNOSIS_RATE * n), 1 if n > 1 else 0, max(n - 1, 0)))
        weights = np.exp(1.5 * (age - age.mean()) / (cohort.age[1] - cohort.age[0]))
        positive = rng.choice(n, size=n_pos, replace=False, p=weights / weights.sum())
        values = np.zeros(n, dtype=int)
        values[positive] = 1
        diagnosis = pd.array(values, dtype="Int64")
    frame["diagnosis"] = diagnosis
    return frame


def _run_prefix(root: str, cohort: str, subject: str, session: str, run: str) -> str:
    folder = f"{root}/derivatives/{cohort}/sub-{subject}/ses-{session}/func"
    return f"{folder}/sub-{subject}_ses-{session}_task-rest_run-{run}_space-{DEMO_SPACE}"


def demo_run_paths(root: str, cohort: str, subject: str, session: str, run: str) -> tuple[str, str]:
    """The fMRIPrep-style BOLD and brain-mask paths of one run (strings under ``root``)."""
    prefix = _run_prefix(root, cohort, subject, session, run)
    return f"{prefix}_desc-preproc_bold.nii.gz", f"{prefix}_desc-brain_mask.nii.gz"


def demo_timeseries_path(root: str, cohort: str, subject: str, session: str, run: str) -> str:
    """The ROI time-series file (``.npy``, T x 64) of one run of a timeseries cohort (a string under ``root``)."""
    return f"{_run_prefix(root, cohort, subject, session, run)}_atlas-Demo_timeseries.npy"


def make_demo_sheets(root: str, cohorts: list[DemoCohort], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo sample sheet (one row per run) and phenotype sheet (one row per subject).

    samples: columns SAMPLE_COLUMNS, all strings; a run has either ``bold`` (and ``mask`` for cohorts with
    masks) or, in a timeseries cohort, ``timeseries`` and ``tr``; the other cells are "".
    phenotypes: columns PHENOTYPE_COLUMNS; age float (years), sex "F"/"M", diagnosis Int64 (0/1 or NA).
    """
    names = [c.name for c in cohorts]
    if len(set(names)) != len(names):
        raise ValueError(f"demo cohort names must be unique, got {names}")
    rows, phenotypes = [], []
    for cohort in cohorts:
        phenotypes.append(_draw_phenotypes(cohort, seed))
        for subject in _subject_ids(cohort.name, cohort.n_subjects):
            for session in range(1, cohort.sessions + 1):
                ids = (cohort.name, subject, str(session), "1")
                if cohort.timeseries:
                    rows.append([*ids, "", "", demo_timeseries_path(root, *ids), f"{cohort.tr:g}"])
                else:
                    bold, mask = demo_run_paths(root, *ids)
                    rows.append([*ids, bold, mask if cohort.mask else "", "", ""])
    samples = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
    pheno = pd.concat(phenotypes, ignore_index=True)[PHENOTYPE_COLUMNS]
    pheno["diagnosis"] = pheno["diagnosis"].astype("Int64")
    return samples, pheno


def write_demo_sheets(samples_path, phenotypes_path, root: str, cohorts: list[DemoCohort], seed: int) -> None:
    """Write the demo sample and phenotype sheets as TSV (empty cells for NA), each atomically."""
    samples, phenotypes = make_demo_sheets(root, cohorts, seed)
    for frame, path in ((samples, samples_path), (phenotypes, phenotypes_path)):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, sep="\t", index=False, na_rep="")


def demo_atlas_paths(root: str) -> dict[str, str]:
    """Paths of the demo atlas files under ``root``/atlas (TemplateFlow / Tian naming)."""
    folder = f"{root}/atlas"
    return {
        "cortical_image":
            f"{folder}/tpl-{DEMO_SPACE}_res-demo_atlas-DemoCortex_desc-56Parcels7Networks_dseg.nii.gz",
        "cortical_labels": f"{folder}/tpl-{DEMO_SPACE}_atlas-DemoCortex_desc-56Parcels7Networks_dseg.tsv",
        "subcortical_image": f"{folder}/tpl-{DEMO_SPACE}_res-demo_atlas-DemoSubcortex_dseg.nii.gz",
        "subcortical_labels": f"{folder}/DemoSubcortex_labels.csv",
    }


def demo_grid() -> tuple[tuple[int, int, int], np.ndarray]:
    """The demo voxel grid: shape (23, 28, 23) and its 4 x 4 voxel-to-MNI-mm affine (8 mm, FSL MNI152)."""
    return _SHAPE, _AFFINE.copy()


def _world_coords() -> np.ndarray:
    """MNI mm coordinates of every voxel centre of the demo grid: [X, Y, Z, 3]."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in _SHAPE), indexing="ij"), axis=-1)
    return ijk @ _AFFINE[:3, :3].T + _AFFINE[:3, 3]


def _ellipsoid_radius(coords: np.ndarray, center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid radius of each point (<= 1 inside): [..., 3] -> [...]."""
    return np.sqrt((((coords - center) / radii) ** 2).sum(axis=-1))


def demo_brain_mask() -> np.ndarray:
    """Boolean brain mask on the demo grid, [23, 28, 23]: the ellipsoid "brain" (fixed, seed-free)."""
    return _ellipsoid_radius(_world_coords(), _BRAIN_CENTER, _BRAIN_RADII) <= 1.0


def _subcortical_dseg(coords: np.ndarray) -> np.ndarray:
    """Subcortical labels 0..8 on the grid [X, Y, Z]: balanced Voronoi cells of the seeds inside the core."""
    brain_r = _ellipsoid_radius(coords, _BRAIN_CENTER, _BRAIN_RADII)
    core = (_ellipsoid_radius(coords, _CORE_CENTER, _CORE_RADII) <= 1.0) & (brain_r < _CORTEX_INNER)
    labels = np.zeros(_SHAPE, dtype=np.int16)
    for sign, offset in ((1.0, 0), (-1.0, 4)):  # Tian order: right hemisphere first
        side = core & (sign * coords[..., 0] > 0)
        seeds = _SUBCORTICAL_SEEDS_RH * np.array([sign, 1.0, 1.0])
        labels[side] = offset + 1 + _balanced_voronoi(coords[side], seeds)
    return labels


def _balanced_voronoi(points: np.ndarray, seeds: np.ndarray, n_iter: int = 300) -> np.ndarray:
    """Assign points [N, 3] (mm) to seeds [K, 3] in cells of nearly equal size -> [N] in 0..K-1.

    A power diagram: cost |p - s_k|^2 - w_k, with the weights w_k (mm^2) raised for cells below
    N / K points and lowered for cells above it, so the cells stay convex and spatially contiguous.
    """
    sq_dist = ((points[:, None, :] - seeds[None]) ** 2).sum(axis=-1)
    weights = np.zeros(len(seeds))
    target = len(points) / len(seeds)
    for _ in range(n_iter):
        counts = np.bincount((sq_dist - weights).argmin(axis=1), minlength=len(seeds))
        weights += 0.5 * (target - counts)
    return (sq_dist - weights).argmin(axis=1)


def _equal_slabs(points: np.ndarray, n_parts: int) -> np.ndarray:
    """Split points [N, 3] into ``n_parts`` equal-count slabs along their first principal axis -> [N]."""
    centred = points - points.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    axis = axis * np.sign(axis[np.argmax(np.abs(axis))])  # sign convention so the split is reproducible
    order = np.argsort(centred @ axis, kind="stable")
    parts = np.empty(len(points), dtype=int)
    parts[order] = np.arange(len(points)) * n_parts // len(points)
    return parts


def _onto_shell(seeds: np.ndarray) -> np.ndarray:
    """Move seeds [K, 3] (mm) radially onto the middle of the cortical shell.

    A seed inside the hollow would own cortex on both sides of it; on the shell every network and
    parcel comes out as one connected piece.
    """
    radius = _ellipsoid_radius(seeds, _BRAIN_CENTER, _BRAIN_RADII)[:, None]
    return _BRAIN_CENTER + (seeds - _BRAIN_CENTER) * ((1.0 + _CORTEX_INNER) / 2) / radius


def _cortical_dseg(coords: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cortical labels 0..56 on the grid [X, Y, Z], Schaefer order (LH 1-28, RH 29-56).

    Networks are balanced Voronoi cells of jittered seeds in each hemisphere's shell; each network
    splits into 4 equal slabs. Raises RuntimeError if a parcel would have fewer than 20 voxels.
    """
    brain_r = _ellipsoid_radius(coords, _BRAIN_CENTER, _BRAIN_RADII)
    shell = (brain_r >= _CORTEX_INNER) & (brain_r <= 1.0)
    jitter = rng.normal(0.0, 4.0, size=_NETWORK_SEEDS_LH.shape)
    labels = np.zeros(_SHAPE, dtype=np.int16)
    for h, sign in enumerate((-1.0, 1.0)):
        side = shell & (sign * coords[..., 0] > 0)
        seeds = _onto_shell((_NETWORK_SEEDS_LH + jitter) * np.array([-sign, 1.0, 1.0]))
        points = coords[side]
        network = _balanced_voronoi(points, seeds)
        parcel = np.zeros(len(points), dtype=int)
        for n in range(len(NETWORKS)):
            members = network == n
            if members.sum() < 80:
                raise RuntimeError(f"demo atlas: network {NETWORKS[n]} has only {members.sum()} voxels")
            parcel[members] = _equal_slabs(points[members], 4)
        labels[side] = h * 28 + network * 4 + parcel + 1
    return labels


def _cortical_names() -> list[str]:
    """The 56 cortical parcel names in label order, e.g. "7Networks_LH_Vis_1"."""
    return [f"7Networks_{hemi}_{net}_{i}" for hemi in ("LH", "RH") for net in NETWORKS for i in range(1, 5)]


def _subcortical_names() -> list[str]:
    """The 8 subcortical ROI names in label order: right hemisphere first, as in Tian's atlas."""
    return [f"{roi}-{hemi}" for hemi in ("rh", "lh") for roi in SUBCORTICAL]


def _save_nifti(data: np.ndarray, path: str | Path, tr: float | None = None) -> None:
    """Write ``data`` (3-D or 4-D, dtype kept) on the demo grid atomically; mm/s, q/sform code 4 (MNI)."""
    img = nib.Nifti1Image(data, _AFFINE)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(_AFFINE, code=4)
    img.set_sform(_AFFINE, code=4)
    if tr is not None:
        img.header.set_zooms((8.0, 8.0, 8.0, float(tr)))
    with atomic_path(path) as tmp:
        if str(path).endswith(".gz"):  # level 1, no timestamp: byte-identical reruns, ISA-L 5x faster than zlib
            tmp.write_bytes(_gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))
        else:
            img.to_filename(tmp)


def write_demo_atlas(root: str, seed: int) -> None:
    """Write the demo cortical and subcortical atlases (int16 NIfTI) and label tables to ``root``/atlas."""
    paths = demo_atlas_paths(root)
    coords = _world_coords()
    _save_nifti(_cortical_dseg(coords, _rng(seed, "atlas")), paths["cortical_image"])
    _save_nifti(_subcortical_dseg(coords), paths["subcortical_image"])
    colors = [NETWORK_COLORS[(i % 28) // 4] for i in range(56)]
    table = pd.DataFrame({"index": np.arange(1, 57), "name": _cortical_names(), "color": colors})
    with atomic_path(paths["cortical_labels"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    lines = "".join(f"{i},{name}\n" for i, name in enumerate(_subcortical_names(), start=1))
    write_text_atomic(paths["subcortical_labels"], lines)


def load_demo_atlas(root: str) -> np.ndarray:
    """The demo ROI labels on the grid [23, 28, 23] int: 0 none, 1-8 subcortical (Tian order), 9-64 cortical.

    This is Brain-JEPA's ROI order (subcortex first, then Schaefer) and the ``atlas_labels`` argument
    of :func:`simulate_run`.
    """
    paths = demo_atlas_paths(root)
    cortex = np.asarray(nib.load(paths["cortical_image"]).dataobj).astype(np.int64)
    subcortex = np.asarray(nib.load(paths["subcortical_image"]).dataobj).astype(np.int64)
    if cortex.shape != _SHAPE or subcortex.shape != _SHAPE:
        raise ValueError(f"{root}/atlas: demo atlas images are not on the demo grid {_SHAPE}")
    if np.any((cortex > 0) & (subcortex > 0)):
        raise ValueError(f"{root}/atlas: cortical and subcortical demo labels overlap")
    return np.where(cortex > 0, cortex + len(_subcortical_names()), subcortex)


def _roi_layout() -> tuple[np.ndarray, np.ndarray]:
    """Network index (0-6 cortical, 7 subcortex) and hemisphere (0 left, 1 right) of the 64 demo ROIs."""
    sub = np.arange(8)
    cortex = np.arange(56)
    network = np.concatenate([np.full(8, len(NETWORKS)), (cortex % 28) // 4])
    hemisphere = np.concatenate([(sub < 4).astype(int), cortex // 28])
    return network, hemisphere


def _bold_like_noise(
    rng: np.random.Generator, n: int, n_volumes: int, tr: float, tau: float = TAU_S
) -> np.ndarray:
    """``n`` independent unit-variance latent series [n, n_volumes] sampled every ``tr`` seconds.

    Generated on a fine grid (step <= FINE_STEP_S seconds, a divisor of the TR) so that every TR
    samples the same continuous-time process: AR(1) with phi = exp(-step / tau) started from its
    stationary law, Gaussian smoothing of SMOOTH_S seconds, variance rescaled to 1 with the exact
    AR(1) autocovariance (not estimated), then one sample per TR.
    """
    from scipy.signal import fftconvolve, lfilter  # here, not at the top: the workflow's parse imports this module

    sub = max(1, math.ceil(tr / FINE_STEP_S - 1e-9))
    step = tr / sub
    phi = math.exp(-step / tau)
    half = int(math.ceil(3 * SMOOTH_S / step))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * step / SMOOTH_S) ** 2)
    lags = np.abs(np.subtract.outer(np.arange(kernel.size), np.arange(kernel.size)))
    kernel /= math.sqrt(kernel @ phi**lags @ kernel)
    shocks = rng.standard_normal((n, n_volumes * sub + 2 * half))
    start = phi * rng.standard_normal((n, 1))
    series = lfilter([math.sqrt(1 - phi**2)], [1.0, -phi], shocks, axis=1, zi=start)[0]
    return fftconvolve(series, kernel[None, :], mode="valid", axes=1)[:, ::sub][:, :n_volumes]


def _nearest_correlation(matrix: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """A positive-definite correlation matrix near a symmetric ``matrix`` [K, K] (eigenvalues >= floor)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    fixed = (vectors * np.maximum(values, floor)) @ vectors.T
    scale = np.sqrt(np.diag(fixed))
    return fixed / np.outer(scale, scale)


def _network_coupling(age_fraction: float, diagnosis: int, rng: np.random.Generator) -> np.ndarray:
    """The 8 x 8 correlation of the network latents (NETWORKS + subcortex) of one subject.

    Default <-> DorsAttn is -(0.45 - 0.30 a); Default <-> subcortex 0.30, or 0.05 with the diagnosis;
    the other couplings are fixed; every off-diagonal entry gets a subject jitter (sd 0.04).
    """
    idx = {name: i for i, name in enumerate(NETWORKS + ("Subcortex",))}
    coupling = {
        ("Vis", "SomMot"): 0.25, ("Vis", "DorsAttn"): 0.2, ("SomMot", "SalVentAttn"): 0.2,
        ("DorsAttn", "Cont"): 0.2, ("SalVentAttn", "Cont"): 0.25, ("Cont", "Default"): 0.15,
        ("Limbic", "Default"): 0.2, ("SalVentAttn", "Default"): -0.15, ("Limbic", "Subcortex"): 0.2,
        ("SalVentAttn", "Subcortex"): 0.1,
        ("DorsAttn", "Default"): -(0.45 - 0.30 * age_fraction),
        ("Default", "Subcortex"): 0.05 if diagnosis else 0.30,
    }
    matrix = np.eye(len(idx))
    for (a, b), value in coupling.items():
        matrix[idx[a], idx[b]] = matrix[idx[b], idx[a]] = value
    jitter = np.triu(rng.normal(0.0, 0.04, size=matrix.shape), 1)
    return _nearest_correlation(matrix + jitter + jitter.T)


@dataclass(frozen=True)
class _SubjectModel:
    """Subject-level parameters shared by all runs of a subject (64 ROIs, V brain voxels).

    coupling [8, 8]; loading [64] (own network); global_loading [64, 2]; amplitude [8] (fluctuation amplitude
    factor per network, age, sex and diagnosis effects included); baseline, psc (percent signal change) and
    noise_sd [V] per brain voxel (noise_sd in scanner units).
    """

    coupling: np.ndarray
    loading: np.ndarray
    global_loading: np.ndarray
    amplitude: np.ndarray
    baseline: np.ndarray
    psc: np.ndarray
    noise_sd: np.ndarray


def _within_network_target(age_fraction: float, diagnosis: int, rng: np.random.Generator,
                           sex: int = 0) -> np.ndarray:
    """Expected within-network ROI correlation [8] (NETWORKS + subcortex) for one subject (sex +1 M, -1 F)."""
    target = np.full(len(NETWORKS) + 1, 0.60 - 0.30 * age_fraction)
    target[-1] = 0.45 - 0.15 * age_fraction
    target[NETWORKS.index("SomMot")] += SEX_WITHIN * (sex > 0)
    target[NETWORKS.index("Default")] += SEX_WITHIN * (sex < 0)
    if diagnosis:
        target[NETWORKS.index("Default")] -= 0.15
    return np.clip(target + rng.normal(0.0, 0.03, size=target.shape), 0.08, 0.85)


def _subject_model(phenotype: dict, brain: np.ndarray, rng: np.random.Generator) -> _SubjectModel:
    """Draw a subject's parameters from its phenotype (age years, sex F/M, diagnosis 0/1/NA).

    brain: flat indices [V] of the brain voxels in NIfTI (Fortran) order; voxel maps follow that order.
    """
    from scipy.ndimage import gaussian_filter

    age_fraction, sex, diagnosis = _phenotype_values(phenotype)
    network, _ = _roi_layout()
    global_loading = np.stack([rng.uniform(lo, hi, size=network.size) for lo, hi in GLOBAL_SPAN], axis=1)
    global_share = (np.mean(GLOBAL_SPAN, axis=1) ** 2).sum()
    within = _within_network_target(age_fraction, diagnosis, rng, sex)
    loading = np.sqrt(np.maximum(within[network] - global_share, 0.02)) * rng.normal(1.0, 0.05, network.size)
    loading = np.minimum(loading, np.sqrt(0.97 - (global_loading**2).sum(axis=1)))
    log_amp = _log_amplitude(age_fraction, sex, diagnosis, rng)
    field = gaussian_filter(rng.standard_normal(_SHAPE), sigma=1.5).ravel(order="F")[brain]
    baseline = np.clip(750.0 + 150.0 * field / field.std(), 500.0, 1000.0)
    n_vox = brain.size
    psc = rng.lognormal(0.0, 0.25, size=n_vox)
    noise_sd = baseline / rng.uniform(60.0, 110.0, size=n_vox)
    return _SubjectModel(_network_coupling(age_fraction, diagnosis, rng), loading, global_loading,
                         np.exp(log_amp), baseline, psc, noise_sd)


def _log_amplitude(age_fraction: float, sex: int, diagnosis: int, rng: np.random.Generator) -> np.ndarray:
    """Log fluctuation amplitude [8] per network (NETWORKS + subcortex) of one subject (see the module notes).

    A global offset (sd SUBJECT_LOG_AMPLITUDE_SD) and a network jitter (sd 0.1), then every network lowered by
    AGE_LOG_AMPLITUDE x a, SomMot raised / Vis lowered by SEX_LOG_AMPLITUDE x s, Default x 0.85 with diagnosis.
    """
    log_amp = rng.normal(0.0, SUBJECT_LOG_AMPLITUDE_SD) + rng.normal(0.0, 0.1, size=len(NETWORKS) + 1)
    log_amp -= AGE_LOG_AMPLITUDE * age_fraction
    log_amp[NETWORKS.index("SomMot")] += SEX_LOG_AMPLITUDE * sex
    log_amp[NETWORKS.index("Vis")] -= SEX_LOG_AMPLITUDE * sex
    if diagnosis:
        log_amp[NETWORKS.index("Default")] += math.log(DIAGNOSIS_DEFAULT_AMPLITUDE)
    return log_amp


def _phenotype_values(phenotype: dict) -> tuple[float, int, int]:
    """(age fraction, sex +1 M / -1 F, diagnosis 0/1 with NA as 0) from a phenotype mapping."""
    try:
        age = float(phenotype["age"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"phenotype {phenotype!r}: needs a numeric 'age' in years") from exc
    if not math.isfinite(age):
        raise ValueError(f"phenotype {phenotype!r}: age is missing")
    sex = phenotype.get("sex")
    if sex not in ("F", "M"):
        raise ValueError(f"phenotype {phenotype!r}: sex must be 'F' or 'M'")
    value = phenotype.get("diagnosis")
    missing = value is None or (isinstance(value, str) and value.strip() in ("", "n/a")) or (
        not isinstance(value, str) and bool(pd.isna(value)))
    try:
        diagnosis = 0 if missing else float(value)
    except ValueError:
        diagnosis = -1.0
    if diagnosis not in (0, 1):
        raise ValueError(f"phenotype {phenotype!r}: diagnosis must be 0, 1 or empty")
    return _age_fraction(age), 1 if sex == "M" else -1, int(diagnosis)


def _roi_signals(
    model: _SubjectModel, rng: np.random.Generator, n_volumes: int, tr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance ROI signals [64, T] and the global components [2, T] of one run."""
    network, hemisphere = _roi_layout()
    n_net = len(NETWORKS) + 1
    shared = np.linalg.cholesky(model.coupling) @ _bold_like_noise(rng, n_net, n_volumes, tr)
    lateral = _bold_like_noise(rng, 2 * n_net, n_volumes, tr).reshape(n_net, 2, n_volumes)
    net_signal = math.sqrt(1 - HEMI_SHARE) * shared[:, None, :] + math.sqrt(HEMI_SHARE) * lateral
    glob = _bold_like_noise(rng, len(GLOBAL_SPAN), n_volumes, tr, tau=2 * TAU_S)
    own = _bold_like_noise(rng, network.size, n_volumes, tr)
    rest = np.sqrt(1.0 - model.loading**2 - (model.global_loading**2).sum(axis=1))
    roi = model.loading[:, None] * net_signal[network, hemisphere] + model.global_loading @ glob
    return roi + rest[:, None] * own, glob


def _voxel_series(model: _SubjectModel, roi_of_voxel: np.ndarray, rng: np.random.Generator,
                  n_volumes: int, tr: float) -> np.ndarray:
    """Scanner-unit time series of the brain voxels [T, V] float32.

    roi_of_voxel [V]: ROI index 0..63 per brain voxel, -1 for unlabelled (white-matter) voxels,
    which carry 30 % of the first global component only.
    """
    roi, glob = _roi_signals(model, rng, n_volumes, tr)
    network, _ = _roi_layout()
    labelled = roi_of_voxel >= 0
    gain = model.psc * np.where(labelled, model.amplitude[network[np.maximum(roi_of_voxel, 0)]], 0.3) / 100.0
    signal = np.where(labelled[None, :], roi.T[:, np.maximum(roi_of_voxel, 0)], glob[0][:, None])
    scale = model.baseline * rng.normal(1.0, 0.02)  # run-to-run scanner gain
    data = scale * (1.0 + gain * signal)
    data += model.noise_sd * rng.standard_normal((n_volumes, roi_of_voxel.size))
    return (np.round(data * 16.0) / 16.0).astype(np.float32)


def _roi_mean_series(model: _SubjectModel, roi_of_voxel: np.ndarray, rng: np.random.Generator,
                     n_volumes: int, tr: float) -> np.ndarray:
    """The ROI means [T, 64] float32 of the voxel model of :func:`_voxel_series`, computed per ROI.

    The ROI signals and the scanner gain are the same draws as there; the white noise of a ROI mean is drawn
    directly with its sd, sqrt(sum of the voxels' noise variances) / n_voxels.
    """
    roi, _ = _roi_signals(model, rng, n_volumes, tr)
    network, _ = _roi_layout()
    scale = rng.normal(1.0, 0.02)  # run-to-run scanner gain
    labelled = roi_of_voxel >= 0
    member = roi_of_voxel[labelled]
    count = np.bincount(member, minlength=network.size)
    if not count.all():
        raise ValueError("atlas_labels leaves a demo ROI without voxels")
    level = np.bincount(member, model.baseline[labelled], minlength=network.size) / count
    swing = np.bincount(member, (model.baseline * model.psc)[labelled], minlength=network.size) / count
    noise = np.sqrt(np.bincount(member, model.noise_sd[labelled] ** 2, minlength=network.size)) / count
    data = scale * (level[:, None] + swing[:, None] * model.amplitude[network][:, None] * roi / 100.0)
    data += noise[:, None] * rng.standard_normal((network.size, n_volumes))
    return data.T.astype(np.float32)


def _run_model(cohort: DemoCohort, subject: str, session: str, run: str, phenotype: dict, seed: int,
               atlas_labels: np.ndarray) -> tuple[_SubjectModel, np.ndarray, np.ndarray, np.random.Generator]:
    """The subject model, brain voxels [V] (F-order flat indices), their ROI (0..63, -1 none) and the run's rng."""
    atlas_labels = np.asarray(atlas_labels)
    if atlas_labels.shape != _SHAPE or atlas_labels.min() < 0 or atlas_labels.max() > 64:
        raise ValueError(f"atlas_labels must be demo ROI labels 0..64 on the grid {_SHAPE}")
    mask = demo_brain_mask()
    if np.any(atlas_labels[~mask] > 0):
        raise ValueError("atlas_labels has ROI voxels outside the demo brain")
    # Voxels are handled in NIfTI (Fortran) order: [T, Z, Y, X] in C order is [X, Y, Z, T] in
    # Fortran order, so the volume is written without a transposing copy.
    brain = np.flatnonzero(mask.ravel(order="F"))
    roi_of_voxel = atlas_labels.ravel(order="F")[brain].astype(int) - 1
    model = _subject_model(phenotype, brain, _rng(seed, "subject", cohort.name, subject))
    return model, brain, roi_of_voxel, _rng(seed, "run", cohort.name, subject, session, run)


def simulate_run(bold_path, mask_path, cohort: DemoCohort, subject: str, session: str, run: str,
                 phenotype: dict, seed: int, atlas_labels: np.ndarray) -> None:
    """Write one simulated run: 4-D float32 BOLD [23, 28, 23, n_volumes], JSON sidecar, optional mask.

    atlas_labels [23, 28, 23] int: 0 none, 1-8 subcortical, 9-64 cortical (see :func:`load_demo_atlas`).
    phenotype: {"age": years, "sex": "F"/"M", "diagnosis": 0/1/NA}. ``mask_path`` "" writes no mask.
    """
    model, brain, roi_of_voxel, run_rng = _run_model(cohort, subject, session, run, phenotype, seed, atlas_labels)
    series = _voxel_series(model, roi_of_voxel, run_rng, cohort.n_volumes, cohort.tr)
    volume = np.zeros((cohort.n_volumes, int(np.prod(_SHAPE))), dtype=np.float32)
    volume[:, brain] = series
    _save_nifti(volume.reshape(cohort.n_volumes, *_SHAPE[::-1]).T, bold_path, tr=cohort.tr)
    sidecar = {"RepetitionTime": float(cohort.tr), "TaskName": "rest", "SkullStripped": False}
    write_text_atomic(sidecar_path(bold_path), json.dumps(sidecar, indent=2) + "\n")
    if mask_path:
        _save_nifti(demo_brain_mask().astype(np.uint8), mask_path)


def simulate_timeseries_run(path, cohort: DemoCohort, subject: str, session: str, run: str, phenotype: dict,
                            seed: int, atlas_labels: np.ndarray) -> None:
    """Write one run as parcellated ROI means: ``.npy`` [n_volumes, 64] float32, ROIs in atlas order.

    The series is that of :func:`simulate_run` for the same identifiers parcellated (same signal, another
    draw of the thermal noise); the TR is not in the file (the sheet's ``tr`` column gives it).
    """
    model, _, roi_of_voxel, run_rng = _run_model(cohort, subject, session, run, phenotype, seed, atlas_labels)
    series = _roi_mean_series(model, roi_of_voxel, run_rng, cohort.n_volumes, cohort.tr)
    with atomic_path(path) as tmp:
        np.save(tmp, series, allow_pickle=False)


def simulate_one_run(root: str, bold_path: str, mask_path: str, cohort: str, tr: float, n_volumes: int,
                     subject: str, session: str, run: str, phenotype: dict, seed: int) -> None:
    """``brainjepa simulate-run`` on one run: a NIfTI run of a demo cohort from its acquisition and labels.

    Only the acquisition enters a run; the sheet settings of a cohort (subjects, sessions, age range, ...)
    are inputs of ``brainjepa demo-sheets``.
    """
    acquisition = DemoCohort(name=cohort, tr=tr, n_volumes=n_volumes, n_subjects=1)
    simulate_run(bold_path, mask_path, acquisition, subject, session, run, phenotype, seed, load_demo_atlas(root))


def _under(path: str, root: Path) -> bool:
    """Whether ``path`` lies inside the folder ``root`` (both resolved)."""
    return Path(path).resolve().is_relative_to(root)


def _cell(row: dict, column: str) -> str:
    value = row.get(column)
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def simulate_runs(samples: pd.DataFrame, phenotypes: pd.DataFrame, root: str, cohorts: list[DemoCohort],
                  seed: int, atlas_labels: np.ndarray | None = None) -> int:
    """Write every run of ``samples`` whose data file (``bold`` or ``timeseries``) lies under ``root``.

    A ``bold`` row gets the NIfTI run (sidecar, and its ``mask`` when given); a ``timeseries`` row the ROI
    series. Rows elsewhere are ignored (real data beside the demo). A row whose cohort is not in ``cohorts``
    or whose (cohort, subject) has no phenotype row raises ValueError; an error while writing a run names
    it. ``atlas_labels``: :func:`load_demo_atlas` of ``root`` when None. Returns the number of runs written.
    """
    from brainjepa.batches import for_each_run
    from brainjepa.sheets import run_id

    labels = load_demo_atlas(root) if atlas_labels is None else atlas_labels
    by_name = {c.name: c for c in cohorts}
    pheno = {(str(r["cohort"]), str(r["subject"])): r for r in phenotypes.to_dict("records")}
    resolved_root = Path(root).resolve()
    runs = []
    for row in samples.to_dict("records"):
        if not _under(_cell(row, "bold") or _cell(row, "timeseries"), resolved_root):
            continue
        cohort, subject = str(row["cohort"]), str(row["subject"])
        if cohort not in by_name:
            raise ValueError(f"sample row {cohort}/{subject}: cohort {cohort!r} is not a demo cohort")
        if (cohort, subject) not in pheno:
            raise ValueError(f"sample row {cohort}/{subject}: no phenotype row for cohort {cohort!r}, "
                             f"subject {subject!r}")
        runs.append((run_id(row), (row, by_name[cohort], pheno[(cohort, subject)])))

    def write(item: tuple[dict, DemoCohort, dict]) -> None:
        row, cohort, phenotype = item
        ids = (cohort, str(row["subject"]), str(row["session"]), str(row["run"]), phenotype, seed, labels)
        if _cell(row, "bold"):
            simulate_run(_cell(row, "bold"), _cell(row, "mask"), *ids)
        else:
            simulate_timeseries_run(_cell(row, "timeseries"), *ids)

    for_each_run(runs, write, "simulate")
    return len(runs)


def simulate(
    samples: pd.DataFrame, phenotypes: pd.DataFrame, root: str, cohorts: list[DemoCohort], seed: int
) -> None:
    """Write the demo atlas and every run of ``samples`` under ``root`` (see :func:`simulate_runs`)."""
    write_demo_atlas(root, seed)
    simulate_runs(samples, phenotypes, root, cohorts, seed)


def simulate_batch(samples_path, phenotypes_path, root: str, cohort: str, tr: float, n_volumes: int, seed: int,
                   run_ids: list[str] | None = None) -> int:
    """``brainjepa simulate-run --samples``: the listed runs (default: all) of one demo cohort of a sample sheet.

    Every listed run must be of ``cohort`` and have its data file under ``root``; each cohort run takes the
    acquisition (``tr`` seconds, ``n_volumes``) and its subject's row of the phenotypes sheet.
    """
    from brainjepa import sheets
    from brainjepa.batches import select_runs
    from brainjepa.errors import InputError

    samples = sheets.load_samples(samples_path, produced=lambda p: True)
    rows = select_runs(samples, run_ids, str(samples_path)) if run_ids else samples[samples["cohort"] == cohort]
    resolved_root = Path(root).resolve()
    for row in rows.to_dict("records"):
        if row["cohort"] != cohort:
            raise InputError(f"{samples_path}: run {row['run_id']} is of cohort {row['cohort']!r}, not {cohort!r}")
        if not _under(row["bold"] or row["timeseries"], resolved_root):
            raise InputError(f"{samples_path}: run {row['run_id']}: its data file is not under the demo root {root}")
    acquisition = DemoCohort(name=cohort, tr=tr, n_volumes=n_volumes, n_subjects=1)
    return simulate_runs(rows, sheets.load_phenotypes(phenotypes_path), root, [acquisition], seed)
