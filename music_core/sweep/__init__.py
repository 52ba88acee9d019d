"""``music sweep``: variants of a run from Hydra-style overrides, each a whole ``music run`` in its
own process (through a launcher), sharing every step whose inputs hash is the same, compared in
one table with paired differences and plots."""
