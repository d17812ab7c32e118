r"""SDCNet on Cityscapes: label propagation (sdcnet/sdc_aug.py) and video-reconstruction training.

Propagation (writes WORKDIR/sdc_aug, the `data.sdc_root` of the segmentation configs):

  python -m jaxseg.main --mode propagate --config configs/sdcnet_cityscapes.py --workdir /tmp/sdc \
      --config.data.root=/data/cityscapes \
      --config.sdcnet.checkpoint=/ckpt/sdcnet/0 --config.flow.flownet2_checkpoint=/ckpt/flownet2/0

(convert the original weights first: python -m jaxseg.convert --src sdc_cityscapes_vrec.pth.tar
--model SDCNet2DRecon --out /ckpt/sdcnet, and --src FlowNet2_checkpoint.pth.tar --model FlowNet2
--out /ckpt/flownet2). Without FlowNet2 weights: --config.flow.source=dis; without any weights,
the flow-only baseline: --config.propagate.method=flow --config.flow.source=dis.

Training (sdcnet/main.py; FlowNet2 frozen, or DIS flows):

  python -m jaxseg.main --config configs/sdcnet_cityscapes.py --workdir /tmp/sdctrain \
      --config.data.root=/data/cityscapes --config.flow.flownet2_checkpoint=/ckpt/flownet2/0
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress_bar = True

  c.sdcnet = ml_collections.ConfigDict()
  c.sdcnet.model = "SDCNet2DRecon"  # | 'SDCNet2D'
  c.sdcnet.sequence_length = 2  # the original's --sequence_length (Recon adds one internally)
  c.sdcnet.rgb_max = 255.0
  # Converted orbax dir, training workdir, or the original .pth(.tar). Training: init from it.
  c.sdcnet.checkpoint = ""
  c.sdcnet.random_init = False  # propagate with an untrained net (tests only)

  c.flow = ml_collections.ConfigDict()
  c.flow.source = "flownet2"  # 'flownet2' | 'dis' (OpenCV DIS optical flow, no weights)
  c.flow.flownet2_checkpoint = ""  # converted orbax dir or FlowNet2_checkpoint.pth.tar
  c.flow.dis_preset = "medium"  # 'ultrafast' | 'fast' | 'medium'

  c.data = ml_collections.ConfigDict()
  c.data.root = ""  # Cityscapes: leftImg8bit/, gtFine/ (and leftImg8bit_sequence/)
  c.data.sequence_root = ""  # folder holding leftImg8bit_sequence/ (default: data.root)
  # (H, W) to resize frames and labels to before anything else; (0, 0) = native size.
  c.data.image_size = (0, 0)

  c.propagate = ml_collections.ConfigDict()
  c.propagate.method = "sdcnet"  # 'sdcnet' | 'flow' (warp with the provider's flow only)
  c.propagate.steps = 5  # +-k frames, _aug.sh's --propagate 5
  c.propagate.splits = "train"  # comma list; sdc_aug.py does 'train'
  c.propagate.output = ""  # default WORKDIR/sdc_aug
  c.propagate.first_frame = "anchor"  # steps >= 2 see (t, t+n-1, t+n) as sdc_aug.py; 'previous'
  c.propagate.batch_size = 2  # chains (annotated frame x direction) per device call
  c.propagate.on_missing = "error"  # 'skip': leave out chains whose video frames are missing
  c.propagate.copy_annotated = True  # copy the annotated pair itself, as sdc_aug.py

  c.train = ml_collections.ConfigDict()
  c.train.sequence_root = ""  # default: <sequence_root>/leftImg8bit_sequence/train
  c.train.crop_size = (448, 448)  # random crop (H, W), the original's default; (0, 0) = none
  c.train.batch_size = 4  # global (the original: 4 per GPU)
  c.train.num_epochs = 500
  c.train.num_steps = -1  # > 0 overrides num_epochs
  c.train.lr = 1e-4  # Adam (no weight decay: the original never passes --wd to the optimizer)
  c.train.lr_milestones = (250, 450)  # epochs, MultiStepLR
  c.train.lr_gamma = 0.1
  c.train.clip_gradients = -1.0  # > 0: clip gradients by value
  c.train.sample_rate = 1  # stride between training windows
  c.train.reverse_prob = 0.5  # play a window backwards
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.stop_at_step = 0  # > 0: save and exit at this step (time-sliced jobs); resume later
  c.train.num_workers = 4  # host threads decoding frames (and computing DIS flows)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict({"data": -1})

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True

  c.lock()
  return c
