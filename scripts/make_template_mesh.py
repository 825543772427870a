"""Rebuild `assets/template_mesh.npy`, the face the synthetic set is drawn from.

The astronaut portrait of scikit-image (Eileen Collins, NASA, public domain) goes through the Face Landmarker;
its 478 points are turned frontal, symmetric and unit-sized (`synthetic_face.build_template_mesh`).

    python scripts/make_template_mesh.py
"""

import numpy as np
from skimage import data

from faceedittalker.landmarks.detector import FaceLandmarker
from faceedittalker.synthetic.face import TEMPLATE_MESH_PATH, build_template_mesh


def main() -> None:
    image = data.astronaut()
    with FaceLandmarker(mode="image") as landmarker:
        face = landmarker.detect(image)
    if face is None or face.matrix is None:
        raise SystemExit("the Face Landmarker found no face in the astronaut portrait")
    template = build_template_mesh(face.points, face.matrix, image.shape[0])
    np.save(TEMPLATE_MESH_PATH, template)
    print(f"wrote {TEMPLATE_MESH_PATH} {template.shape}")


if __name__ == "__main__":
    main()
