"""The web demo (Gradio): a portrait, a speech file and attribute edits -> the talking-head video in the page.

    python scripts/demo.py [model=DIR] [port=7860] [host=127.0.0.1] [share=false]

Same as the `faceedittalker-demo` console command; see faceedittalker/demo.py.
"""

from faceedittalker.demo import main

if __name__ == "__main__":
    main()
