"""Train AFA on MS COCO 2014.

    python train_coco.py --config configs/coco.yaml dataset.root_dir=/path/MSCOCO \
        dataset.name_list_dir=/path/MSCOCO/lists
    torchrun --nproc_per_node=4 train_coco.py --config configs/coco.yaml

Same engine as train_voc.py; the VOC/COCO differences are the config keys of configs/coco.yaml.
"""

import sys

from utils.train.loop import cli

if __name__ == "__main__":
    sys.exit(cli(default_config="configs/coco.yaml"))
