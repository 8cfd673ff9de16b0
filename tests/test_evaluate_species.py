"""Per-species matching and averaging: species column, templates per species, sign and wedge alike for every map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from cryorestore import io
from cryorestore.errors import InputError
from cryorestore.evaluate import species

BOX = 16


def _ball(radius, shell=None):
    g = np.arange(BOX) - BOX // 2
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    v = (r <= radius).astype(float) if shell is None else (np.abs(r - radius) <= shell).astype(float)
    return ndimage.gaussian_filter(v, 0.7).astype(np.float32)


def _scene(rng):
    """A 32×64×64 map with 3 balls (species 'ball') and 3 shells (species 'shell') at known places."""
    templates = {"ball": _ball(3.0), "shell": _ball(5.0, shell=1.0)}
    centres = {"ball": [(16, 14, 14), (16, 14, 46), (16, 48, 30)], "shell": [(16, 46, 50), (16, 30, 30), (16, 48, 10)]}
    vol = np.zeros((32, 64, 64), np.float32)
    rows = []
    for sp, cs in centres.items():
        for c in cs:
            sl = tuple(slice(x - BOX // 2, x + BOX // 2) for x in c)
            vol[sl] += templates[sp]
            rows.append({"rlnCoordinateX": c[2], "rlnCoordinateY": c[1], "rlnCoordinateZ": c[0],
                         "rlnAngleRot": 0.0, "rlnAngleTilt": 0.0, "rlnAnglePsi": 0.0, species.SPECIES_COLUMN: sp})
    vol += rng.normal(scale=0.05, size=vol.shape).astype(np.float32)
    return vol, pd.DataFrame(rows), templates


def test_species_labels_and_missing_column(rng):
    _, df, _ = _scene(rng)
    assert species.species_names(df) == ["ball", "shell"]
    assert species.species_names(df.drop(columns=[species.SPECIES_COLUMN])) == [species.DEFAULT_SPECIES]


def test_load_templates_per_species_and_fallback(tmp_path, rng):
    _, df, templates = _scene(rng)
    for sp, t in templates.items():
        io.write_mrc(tmp_path / f"template_{sp}.mrc", t, 10.0)
    got = species.load_templates(df, tmp_path)
    assert set(got) == {"ball", "shell"} and np.allclose(got["shell"], templates["shell"])
    one = df.drop(columns=[species.SPECIES_COLUMN])
    io.write_mrc(tmp_path / "template.mrc", templates["ball"], 10.0)
    assert np.allclose(species.load_templates(one, tmp_path)[species.DEFAULT_SPECIES], templates["ball"])
    (tmp_path / "template_shell.mrc").unlink()
    with pytest.raises(InputError, match="template_shell.mrc"):
        species.load_templates(df, tmp_path)


def test_species_metrics_find_each_species_and_ignore_the_sign(rng):
    vol, df, templates = _scene(rng)
    kw = dict(voxel_size=10.0, tilt_range=(-60.0, 60.0), match_step=90.0)
    pos = species.species_metrics(vol, df, templates, **kw)
    neg = species.species_metrics(-vol, df, templates, sign=-1.0, **kw)  # dark particles, flipped back
    for sp in ("ball", "shell"):
        assert pos[sp]["n_particles"] == 3
        assert pos[sp]["pr_auc"] > 0.9, (sp, pos[sp])
        # a map whose dense matter is dark, multiplied by its sign, scores exactly the same
        for k, v in pos[sp].items():
            assert neg[sp][k] == pytest.approx(v, abs=1e-6), k
        for k in ("sta_half_fsc0143", "sta_half_fsc05", "sta_ref_fsc05"):
            assert 0 < pos[sp][k] <= 0.5
    # without the sign the dark map is not found: the contrast convention matters
    wrong = species.species_metrics(-vol, df, templates, **kw)
    assert wrong["ball"]["pr_auc"] < pos["ball"]["pr_auc"]
