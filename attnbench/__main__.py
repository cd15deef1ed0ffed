"""`python3 -m attnbench ...` runs the same CLI as the `attnbench` command.

Useful where the console script is not on PATH, or to run a checkout other than the installed one
(`PYTHONPATH=/path/to/checkout python3 -m attnbench run ...`).
"""
from attnbench.cli import main

if __name__ == "__main__":
    main()
