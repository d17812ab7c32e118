"""The published checkpoints jaxseg converts by name (data only; read by jaxseg.pretrained).

Fields of an entry (see `jaxseg.pretrained.hub.Entry`):
  name           "<publisher>/<model>-<dataset>", the name `python -m jaxseg.pretrained get` takes
  filename       the published file name; the download is cached under that name
  url            where the publisher links the file (Google-Drive "file/d/ID/view" links are
                 fetched through Drive's download endpoint and its confirm page)
  download       "direct" (a file URL), "gdrive" (a Drive file link) or "manual" (the publisher
                 links a Drive FOLDER only: the user downloads the file by hand)
  size_mb        the size the publisher states (NVIDIA / MSeg: "1071MB" in their READMEs,
                 NVIDIA's "1.1GB" kept as 1100; torchvision: `_file_size` of its weight
                 metadata, MiB); None = not stated. Used for a +-10% sanity check only.
  sha256         the full sha256 where the publisher states it; "" = NOT PUBLISHED (no publisher
                 below states one)
  sha256_prefix  torchvision's file names end in the first 8 hex digits of the file's sha256
                 (what torch.hub checks); "" = none
  converter      "segmentation" (jaxseg.convert), "sdcnet" or "flownet2" (jaxseg.sdcnet)
  model          the jaxseg model name (jaxseg.models.registry; SDCNet2DRecon / FlowNet2)
  folder_path    "manual" entries: the file's path as the publisher's configs name it
  num_classes    the classifier size of the file (None: not a segmentation network)
  class_table    the dataset's class table: a key of labels.BUILTIN_TABLES, "mseg_universal"
                 (MSeg's 194-class universal taxonomy, not shipped with jaxseg) or None
  trunk_only     an ImageNet trunk: the segmentation head is initialised (num_classes classes)
  model_overrides  create_model keywords the file needs (semseg PSANet: its training crop)
  source         the page that publishes the link

Sources, read 2026-11: NVIDIA/semantic-segmentation branch sdcnet README.md ("Pre-trained
models"), hszhao/semseg README.md + config/*/*.yaml (model_path, classes, train_h),
torchvision/models/segmentation/deeplabv3.py (Weights url / _file_size), mseg-dataset/
mseg-semantic README.md ("MSeg Pre-trained Models": "Each model is 528 MB in size").
"""

_NVIDIA = "https://github.com/NVIDIA/semantic-segmentation/tree/sdcnet#pre-trained-models"
_SEMSEG = "https://github.com/hszhao/semseg#usage"
_SEMSEG_FOLDER = "https://drive.google.com/open?id=15wx9vOM0euyizq-M1uINgN0_wjVRf9J3"
_TORCHVISION = ("https://github.com/pytorch/vision/blob/main/torchvision/models/segmentation/"
                "deeplabv3.py")
_MSEG = "https://github.com/mseg-dataset/mseg-semantic#mseg-pre-trained-models"

# Omitted fields take their defaults: sha256 / sha256_prefix / folder_path "", size_mb and
# num_classes / class_table None, converter "segmentation", trunk_only False, model_overrides {}.
CATALOG = (
    {"name": "nvidia/cityscapes-wrn38", "filename": "cityscapes_best.pth",
     "url": "https://drive.google.com/file/d/1P4kPaMY-SmQ3yPJQTJ7xMGAB_Su-1zTl/view?usp=sharing",
     "download": "gdrive", "size_mb": 1071, "model": "DeepWV3Plus", "num_classes": 19,
     "class_table": "cityscapes", "source": _NVIDIA},
    {"name": "nvidia/camvid-wrn38", "filename": "camvid_best.pth",
     "url": "https://drive.google.com/file/d/1OzUCbFdXulB2P80Qxm7C3iNTeTP0Mvb_/view?usp=sharing",
     "download": "gdrive", "size_mb": 1071, "model": "DeepWV3Plus", "num_classes": 11,
     "class_table": "camvid", "source": _NVIDIA},
    {"name": "nvidia/kitti-wrn38", "filename": "kitti_best.pth",
     "url": "https://drive.google.com/file/d/1OrTcqH_I3PHFiMlTTZJgBy8l_pladwtg/view?usp=sharing",
     "download": "gdrive", "size_mb": 1071, "model": "DeepWV3Plus", "num_classes": 19,
     "class_table": "kitti", "source": _NVIDIA},
    {"name": "nvidia/wrn38-imagenet", "filename": "wider_resnet38.pth.tar",
     "url": "https://drive.google.com/file/d/1OfKQPQXbXGbWAQJj2R82x6qyz6f-1U6t/view?usp=sharing",
     "download": "gdrive", "size_mb": 833, "model": "DeepWV3Plus", "num_classes": 19,
     "class_table": "cityscapes", "trunk_only": True, "source": _NVIDIA},
    {"name": "nvidia/cityscapes-cv0-wrn38-nosdcaug",
     "filename": "cityscapes_cv0_wideresnet38_nosdcaug.pth",
     "url": "https://drive.google.com/file/d/1CKB7gpcPLgDLA7LuFJc46rYcNzF3aWzH/view?usp=sharing",
     "download": "gdrive", "size_mb": 1100, "model": "DeepWV3Plus", "num_classes": 19,
     "class_table": "cityscapes", "source": _NVIDIA},
    {"name": "nvidia/cityscapes-cv0-srnx50-nosdcaug",
     "filename": "cityscapes_cv0_seresnext50_nosdcaug.pth",
     "url": "https://drive.google.com/file/d/1aGdA1WAKKkU2y-87wSOE1prwrIzs_L-h/view?usp=sharing",
     "download": "gdrive", "size_mb": 324, "model": "DeepSRNX50V3PlusD_m1", "num_classes": 19,
     "class_table": "cityscapes", "source": _NVIDIA},
    {"name": "nvidia/sdcnet-cityscapes-vrec", "filename": "sdc_cityscapes_vrec.pth.tar",
     "url": "https://drive.google.com/file/d/1OxnJo2tFEQs3vuY01ibPFjn3cRCo2yWt/view?usp=sharing",
     "download": "gdrive", "size_mb": 38, "model": "SDCNet2DRecon", "converter": "sdcnet",
     "source": _NVIDIA},
    {"name": "nvidia/flownet2", "filename": "FlowNet2_checkpoint.pth.tar",
     "url": "https://drive.google.com/file/d/1hF8vS6YeHkx3j2pfCeQqqZGwA_PJq_Da/view?usp=sharing",
     "download": "gdrive", "size_mb": 620, "model": "FlowNet2", "converter": "flownet2",
     "source": _NVIDIA},
    {"name": "semseg/pspnet50-ade20k", "filename": "train_epoch_100.pth", "url": _SEMSEG_FOLDER,
     "download": "manual", "model": "PSPNetR50", "num_classes": 150, "class_table": "ade20k",
     "folder_path": "exp/ade20k/pspnet50/model/train_epoch_100.pth", "source": _SEMSEG},
    {"name": "semseg/pspnet101-ade20k", "filename": "train_epoch_100.pth", "url": _SEMSEG_FOLDER,
     "download": "manual", "model": "PSPNetR101", "num_classes": 150, "class_table": "ade20k",
     "folder_path": "exp/ade20k/pspnet101/model/train_epoch_100.pth", "source": _SEMSEG},
    {"name": "semseg/psanet50-ade20k", "filename": "train_epoch_100.pth", "url": _SEMSEG_FOLDER,
     "download": "manual", "model": "PSANetR50", "num_classes": 150, "class_table": "ade20k",
     "model_overrides": {"psa_type": 2, "crop_size": 465, "shrink_factor": 2},
     "folder_path": "exp/ade20k/psanet50/model/train_epoch_100.pth", "source": _SEMSEG},
    {"name": "semseg/psanet101-ade20k", "filename": "train_epoch_100.pth", "url": _SEMSEG_FOLDER,
     "download": "manual", "model": "PSANetR101", "num_classes": 150, "class_table": "ade20k",
     "model_overrides": {"psa_type": 2, "crop_size": 465, "shrink_factor": 2},
     "folder_path": "exp/ade20k/psanet101/model/train_epoch_100.pth", "source": _SEMSEG},
    {"name": "semseg/pspnet50-voc2012", "filename": "train_epoch_50.pth", "url": _SEMSEG_FOLDER,
     "download": "manual", "model": "PSPNetR50", "num_classes": 21, "class_table": "voc",
     "folder_path": "exp/voc2012/pspnet50/model/train_epoch_50.pth", "source": _SEMSEG},
    {"name": "semseg/pspnet101-voc2012", "filename": "train_epoch_50.pth", "url": _SEMSEG_FOLDER,
     "download": "manual", "model": "PSPNetR101", "num_classes": 21, "class_table": "voc",
     "folder_path": "exp/voc2012/pspnet101/model/train_epoch_50.pth", "source": _SEMSEG},
    {"name": "semseg/psanet50-voc2012", "filename": "train_epoch_50.pth", "url": _SEMSEG_FOLDER,
     "download": "manual", "model": "PSANetR50", "num_classes": 21, "class_table": "voc",
     "model_overrides": {"psa_type": 2, "crop_size": 465, "shrink_factor": 2},
     "folder_path": "exp/voc2012/psanet50/model/train_epoch_50.pth", "source": _SEMSEG},
    {"name": "semseg/psanet101-voc2012", "filename": "train_epoch_50.pth", "url": _SEMSEG_FOLDER,
     "download": "manual", "model": "PSANetR101", "num_classes": 21, "class_table": "voc",
     "model_overrides": {"psa_type": 2, "crop_size": 465, "shrink_factor": 2},
     "folder_path": "exp/voc2012/psanet101/model/train_epoch_50.pth", "source": _SEMSEG},
    {"name": "semseg/pspnet50-cityscapes", "filename": "train_epoch_200.pth",
     "url": _SEMSEG_FOLDER, "download": "manual", "model": "PSPNetR50", "num_classes": 19,
     "class_table": "cityscapes",
     "folder_path": "exp/cityscapes/pspnet50/model/train_epoch_200.pth", "source": _SEMSEG},
    {"name": "semseg/pspnet101-cityscapes", "filename": "train_epoch_200.pth",
     "url": _SEMSEG_FOLDER, "download": "manual", "model": "PSPNetR101", "num_classes": 19,
     "class_table": "cityscapes",
     "folder_path": "exp/cityscapes/pspnet101/model/train_epoch_200.pth", "source": _SEMSEG},
    {"name": "semseg/psanet50-cityscapes", "filename": "train_epoch_200.pth",
     "url": _SEMSEG_FOLDER, "download": "manual", "model": "PSANetR50", "num_classes": 19,
     "class_table": "cityscapes",
     "model_overrides": {"psa_type": 2, "crop_size": 705, "shrink_factor": 2},
     "folder_path": "exp/cityscapes/psanet50/model/train_epoch_200.pth", "source": _SEMSEG},
    {"name": "semseg/psanet101-cityscapes", "filename": "train_epoch_200.pth",
     "url": _SEMSEG_FOLDER, "download": "manual", "model": "PSANetR101", "num_classes": 19,
     "class_table": "cityscapes",
     "model_overrides": {"psa_type": 2, "crop_size": 705, "shrink_factor": 2},
     "folder_path": "exp/cityscapes/psanet101/model/train_epoch_200.pth", "source": _SEMSEG},
    {"name": "torchvision/deeplabv3-resnet50-coco",
     "filename": "deeplabv3_resnet50_coco-cd0a2569.pth",
     "url": "https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth",
     "download": "direct", "size_mb": 160.515, "sha256_prefix": "cd0a2569",
     "model": "DeepLabV3R50", "num_classes": 21, "class_table": "voc", "source": _TORCHVISION},
    {"name": "torchvision/deeplabv3-resnet101-coco",
     "filename": "deeplabv3_resnet101_coco-586e9e4e.pth",
     "url": "https://download.pytorch.org/models/deeplabv3_resnet101_coco-586e9e4e.pth",
     "download": "direct", "size_mb": 233.217, "sha256_prefix": "586e9e4e",
     "model": "DeepLabV3R101", "num_classes": 21, "class_table": "voc", "source": _TORCHVISION},
    {"name": "mseg/hrnet-w48-mseg-3m", "filename": "mseg-3m.pth",
     "url": "https://drive.google.com/file/d/1iobea9IW2cWPF6DtM04OvKtDRVNggSb5/view?usp=sharing",
     "download": "gdrive", "size_mb": 528, "model": "HRNetW48", "num_classes": 194,
     "class_table": "mseg_universal", "source": _MSEG},
    {"name": "mseg/hrnet-w48-mseg-3m-720p", "filename": "mseg-3m-720p.pth",
     "url": "https://drive.google.com/file/d/1Y9rHOn_8e_qLuOnl4NeOeueU-MXRi3Ft/view?usp=sharing",
     "download": "gdrive", "size_mb": 528, "model": "HRNetW48", "num_classes": 194,
     "class_table": "mseg_universal", "source": _MSEG},
    {"name": "mseg/hrnet-w48-mseg-3m-480p", "filename": "mseg-3m-480p.pth",
     "url": "https://drive.google.com/file/d/1BeZt6QXLwVQJhOVd_NTnVTmtAO1zJYZ-/view?usp=sharing",
     "download": "gdrive", "size_mb": 528, "model": "HRNetW48", "num_classes": 194,
     "class_table": "mseg_universal", "source": _MSEG},
    {"name": "mseg/hrnet-w48-mseg-1m", "filename": "mseg-1m.pth",
     "url": "https://drive.google.com/file/d/1g-D6PtXV-UhoIYFcQbiqcXWU2Q2M-zo9/view?usp=sharing",
     "download": "gdrive", "size_mb": 528, "model": "HRNetW48", "num_classes": 194,
     "class_table": "mseg_universal", "source": _MSEG},
)
