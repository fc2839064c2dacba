"""Train a gated network: `python run.py [overrides]`, or a sweep: `python run.py -m gamma=1e-4,1e-3`."""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gated_pruning import launch


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return launch.run_job(cfg, HydraConfig.get())


if __name__ == "__main__":
    sys.exit(launch.command(main))
