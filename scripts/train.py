"""Train one stage of FaceEditTalker (Alg. 1-3); the body is `faceedittalker.cli.train` (`faceedittalker-train`).

    python scripts/train.py experiment=tiny/stage1                       # then tiny/stage2, tiny/stage3, tiny/landmarks
    python scripts/train.py experiment=ablation/tiny_ldm_conv            # Table V II at CPU size
    accelerate launch scripts/train.py experiment=paper/stage1 data.root=/datasets/ffhq
"""

from faceedittalker.cli.train import main

if __name__ == "__main__":
    main()
