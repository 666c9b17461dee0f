"""In-tree annotator plug-ins: one import line per module that registers backends or stages.

Each module here defines its backend and calls ``annotators.registry.register_*_backend`` (or
``register_stage``). ``annotators.registry.load_plugins`` imports this package the first time the
registry is read, so a backend added here is reachable from ``vipa annotate`` and listed in its
``--help`` with no other edit. Packages outside this repository use the entry-point group
``vipa.annotators`` instead (see ``annotators.registry``).
"""
