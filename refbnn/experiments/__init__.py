"""The paper's experiments (docs/experiments.md): cells with stable keys and seeds
(`cells`), running them in a pool or on Dask with resume (`runner`), results and the
report with the paper's claims (`report`), and the figures (`plots`)."""
