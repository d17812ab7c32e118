"""MSeg-style multi-dataset training: HRNetV2-W48 on Cityscapes + Mapillary + CamVid + ADE20K
relabelled into jaxseg's universal taxonomy (jaxseg/data/taxonomies/universal).

  python -m jaxseg.main --config configs/mseg_multi_hrnet_w48.py --workdir runs/mseg \
      --config.data.multi.sources.cityscapes.root=/data/cityscapes \
      --config.data.multi.sources.mapillary.root=/data/mapillary \
      --config.data.multi.sources.camvid.root=/data/CamVid \
      --config.data.multi.sources.ade20k.root=/data/ADEChallengeData2016

Evaluate the universal model in one dataset's own classes (the log of the summed probabilities
of the universal classes mapped to each dataset class):

  python -m jaxseg.main --config configs/mseg_multi_hrnet_w48.py --workdir runs/mseg --mode eval \
      --config.data.name=cityscapes --config.data.root=/data/cityscapes \
      --config.eval.taxonomy=universal --config.eval.taxonomy_dataset=cityscapes

Training follows MSeg's mseg-relabeled-3m.yaml where jaxseg has the knob: 713 crops of
images resized to a 1080 shorter side, scale 0.5-2, rotation +-10 degrees, SGD lr 0.01
momentum 0.9 weight decay 1e-4, poly 0.9, ~3M training examples, every dataset in an equal
share of each epoch (MSeg gives each dataset its own GPU). MSeg trains on 7 relabelled datasets
(with COCO, BDD, IDD, SUN RGB-D); this recipe uses the datasets jaxseg reads. Drop a source
(e.g. ADE20K) by deleting its entry; give weights to change the mix.
"""
import ml_collections

from jaxseg.config import recipes_peers

EXAMPLES = 3_000_000  # MSeg num_examples


def get_config():
  c = recipes_peers.sgd_poly("HRNetW48", crop_size=713)
  c.data.name = "multi"
  c.data.multi.taxonomy = "universal"
  c.data.multi.sources = ml_collections.ConfigDict({
      "cityscapes": {"root": "", "weight": 1.0},
      "mapillary": {"root": "", "weight": 1.0},
      "camvid": {"root": "", "weight": 1.0},
      "ade20k": {"root": "", "weight": 1.0},
  })
  c.data.pre_size = 1080  # MSeg short_size: 1080p training images
  c.data.rotate = 10.0
  # The sources' val images differ in size: periodic evaluation in the universal taxonomy at
  # one size (per-dataset numbers: --mode eval with eval.taxonomy, see above).
  c.data.eval_resize = "fixed"
  c.data.eval_height = 1080
  c.data.eval_width = 1920
  c.train.batch_size = 32  # MSeg: 35 = 5 per GPU on 7 GPUs
  c.train.num_steps = EXAMPLES // c.train.batch_size
  c.train.eval_every = 10000
  c.train.checkpoint_every = 2000
  c.eval.batch_size = 1
  return c
