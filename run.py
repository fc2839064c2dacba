"""Train a gated VGG: `python run.py [overrides]`, or a sweep: `python run.py -m gamma=1e-4,1e-3`."""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gated_pruning import cli


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    return cli.run_job(cfg, hc)


if __name__ == "__main__":
    try:
        sys.argv[1:] = cli.preflight(sys.argv[1:])  # every job checked, the run directory claimed
        main()
    except KeyboardInterrupt:
        cli.fail("stopped by SIGINT before the run started", 130)
