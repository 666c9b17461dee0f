"""Robot post-training data for ``vipa train post``: LeRobot v3 demonstrations (or the sim's
.npz array export) as model-ready samples with normalised states and action chunks. The reader
lives with the simulator code (``vipa.sim.posttrain``, numpy + torch only); this is the name the
training CLI imports."""

from vipa.sim.posttrain import load_robot_data

__all__ = ["load_robot_data"]
