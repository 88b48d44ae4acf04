"""One module per platform that joined the conformance suite after the first six: each defines ``PLATFORM``
(the registry's name) and ``Driver`` (the same shape as the classes in ``tests/conformance/drivers.py``).
A new connector adds a file here, so connectors built in parallel never edit one shared file."""
