"""``python -m polyrec``: the same command line as the ``polyrec`` script."""

from polyrec.cli import main

if __name__ == "__main__":
    main()
