"""Visualisation: Rerun entity paths (``paths``), recordings and blueprints (``recording``) and
plotly figures (``figures``). The only place in VIPA that knows Rerun entity paths."""
