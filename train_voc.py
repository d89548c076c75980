"""Train AFA on PASCAL VOC 2012 (+SBD).

    python train_voc.py --config configs/voc.yaml dataset.root_dir=/path/VOCdevkit/VOC2012
    torchrun --nproc_per_node=2 train_voc.py --config configs/voc.yaml
    python train_voc.py --config configs/voc.yaml --resume

Everything is a config key (see utils/config.py); ``key=value`` arguments override the YAML.
"""

import sys

from utils.train.loop import cli

if __name__ == "__main__":
    sys.exit(cli(default_config="configs/voc.yaml"))
