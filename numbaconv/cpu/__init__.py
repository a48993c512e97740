"""CPU algorithms, one module each; every module offers ``supports``,
``forward``, ``backward_input`` and ``backward_weight`` on 3-d problems
(1-d and 2-d problems arrive with leading unit spatial dims)."""
