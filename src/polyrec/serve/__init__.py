"""The recommendation service: ``polyrec serve`` (see :mod:`polyrec.serve.app`)."""
