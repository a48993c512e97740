"""numbaconv's version, in a module of its own so that the modules that record it (the tuning
plans, the command's reports) need not import the package that imports them."""
__version__ = "0.1.0"
