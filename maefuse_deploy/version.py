"""The toolkit's version, in a module of its own at the bottom layer: checkpoints, graphs and engines record it,
and importing it from the root package would pull the runtime into every module that writes one."""

__version__ = "0.1.0"
