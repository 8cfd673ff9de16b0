"""cryorestore: self-supervised restoration and evaluation of cryo-ET tomograms.

Arrays are (z, y, x) as mrcfile returns them; z is the beam direction, the tilt axis is y.
Voxel sizes are in Å, spatial frequencies in cycles/voxel (Nyquist = 0.5).
"""

__version__ = "0.1.0"
