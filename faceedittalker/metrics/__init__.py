"""Metrics: how close generated images, videos and landmarks are to the truth, and what the codes carry.

`image`: PSNR, whole and in the mouth box. `landmarks`: the landmark predictor on held-out clips. `semantics`: what
z_sem carries (the denoiser's reliance on it, the reconstruction check) and the balanced accuracy of stage 2.

The paper's evaluation (Tables II, III, V; `scripts/evaluate.py`): `video` (PSNR, SSIM), `cpbd`, `fid`,
`lipsync` (SyncNet: LSE-D, LSE-C, AV offset), `lmd` (M-LMD, F-LMD), `identity` (TL-ID, TG-ID), and `suite`
(pairing, alignment, cropping, the table).
"""
