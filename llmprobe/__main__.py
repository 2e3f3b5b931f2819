"""`python -m llmprobe`: the same command line as the `llmprobe` script."""

from .cli import main

main()
