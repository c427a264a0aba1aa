"""`python -m harness.bench`: the transport benchmark (see `harness.bench.transport`)."""

from harness.bench.transport import main

if __name__ == "__main__":
    main()
