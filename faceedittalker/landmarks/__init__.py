"""The landmark sequence L (Sec. III-E): MediaPipe's 478-point topology, the detector that finds it in images, the
pose geometry that removes or restores head pose, and the landmark images L that E_ldm reads.

`topology` and `render` import neither MediaPipe nor PyAV, so models can use them; `detector` needs MediaPipe.
"""
