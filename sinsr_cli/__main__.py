"""``python -m sinsr_cli`` (and ``torchrun -m sinsr_cli distill ...``) runs the CLI."""

from .cli.app import main

if __name__ == "__main__":
    main()
