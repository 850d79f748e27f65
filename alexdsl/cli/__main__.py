"""``python -m alexdsl.cli`` (as torchrun and editors start it): the ``alexdsl`` command."""

from alexdsl.cli import main

if __name__ == "__main__":
    main()
