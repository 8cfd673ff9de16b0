"""Evaluation of raw and restored tomograms.

Modules (one job each): :mod:`.quality` (PSNR/SSIM/FSC/wedge metrics of whole maps), :mod:`.snr`
(Topaz-style paired-box SNR), :mod:`.angles` (uniform rotation sampling), :mod:`.matching`
(template matching), :mod:`.pr` (precision-recall against known positions), :mod:`.averaging`
(subtomogram averaging), :mod:`.species` (per-species matching and averaging of one map), :mod:`.truthfree`
(the truth-free score on a held-out region: estimated gain, cross-FSC, hallucination check, uncertainty map),
:mod:`.segmentation` (membrane surfaceness).
"""
