"""Golden-case parity with the authors' code: the harness, the cases by method, and the case registry."""
