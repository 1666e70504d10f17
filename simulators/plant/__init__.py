"""The OPC UA plant simulator: pumps from ``physics`` served as OPC UA variables."""

from bridge.simulators.plant.server import PLANT_NAMESPACE, PlantSimulator, serve_forever

__all__ = ["PLANT_NAMESPACE", "PlantSimulator", "serve_forever"]
