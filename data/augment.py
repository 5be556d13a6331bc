"""Train and eval augmentations (Tensorpack imgaug), uint8 BGR in, uint8 BGR out.

docs/FACTS.md Sec. 5: training takes a random-size crop resized to 224 (cubic), colour jitter (brightness, contrast,
saturation, lighting) in random order and a horizontal flip; evaluation resizes the shorter side to 256 (cubic) and
centre-crops 224. This is the standard Tensorpack ImageNet (fb.resnet.torch) recipe. Other input sizes S scale it:
the train crop is resized to S, eval resizes the shorter side to round(S * 256 / 224) and centre-crops S.
"""
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np
from tensorpack.dataflow import imgaug

from .errors import DataError

INTERPOLATION = cv2.INTER_CUBIC
CROP_ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


@dataclass(frozen=True)
class TrainAugmentation:
    """The knobs of the training augmentation that differ between data sets."""
    crop_area_fraction: Tuple[float, float]
    flip: bool


# "imagenet" is docs/FACTS.md Sec. 5. "light" is for small images whose content fills the frame and
# whose mirror image is another class (digits): larger crops, no flip.
TRAIN_AUGMENTATIONS = {
    "imagenet": TrainAugmentation(crop_area_fraction=(0.08, 1.0), flip=True),
    "light": TrainAugmentation(crop_area_fraction=(0.5, 1.0), flip=False),
}

# ImageNet PCA lighting (fb.resnet.torch constants, there for RGB on the 0..1 scale), reordered for BGR on the 0..255
# scale: eigenvalues reversed, the eigenvector matrix reversed in rows (channels) and columns (following the values).
PCA_EIGVAL_RGB = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32)
PCA_EIGVEC_RGB = np.array([[-0.5675, 0.7192, 0.4009],
                           [-0.5808, -0.0045, -0.8140],
                           [-0.5836, -0.6948, 0.4203]], dtype=np.float32)
PCA_EIGVAL_BGR = PCA_EIGVAL_RGB[::-1] * 255.0
PCA_EIGVEC_BGR = PCA_EIGVEC_RGB[::-1, ::-1]


def eval_resize_size(image_size):
    """Shorter side before the eval centre crop: 256 for 224, round(S * 256 / 224) for S."""
    return int(round(image_size * 256.0 / 224.0))


def round_to_uint8(image):
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class DescribedOnce:
    """Tensorpack 0.11 names each transform a photometric augmentor makes with str(augmentor), and that text is built
    anew each time (the constructor inspected, its arrays printed): for 16x16 digits, 60% of the training pipeline's
    time went there (cProfile). An augmentor's settings never change after construction, so its text is built once."""

    def __str__(self):
        if "_description" not in self.__dict__:
            self._description = super().__str__()
        return self._description

    __repr__ = __str__


class ToFloat32(DescribedOnce, imgaug.ToFloat32):
    pass


class BrightnessScale(DescribedOnce, imgaug.BrightnessScale):
    pass


class Contrast(DescribedOnce, imgaug.Contrast):
    pass


class Saturation(DescribedOnce, imgaug.Saturation):
    pass


class Lighting(DescribedOnce, imgaug.Lighting):
    pass


def colour_jitter():
    """Brightness, contrast, saturation and PCA lighting in random order (BGR). As in the original, contrast stretches
    each channel around its own mean (imgaug.Contrast's rgb=None), not the grey level (docs/FACTS.md Sec. 7). The
    original jittered uint8 images, clipping and truncating at each step; here the jitter runs on float32, rounded to
    uint8 once at the end (at most a few grey levels per pixel apart, without the truncation's downward bias)."""
    return imgaug.RandomOrderAug([
        BrightnessScale((0.6, 1.4), clip=False),
        Contrast((0.6, 1.4), clip=False),
        Saturation(0.4, rgb=False),
        Lighting(0.1, eigval=PCA_EIGVAL_BGR, eigvec=PCA_EIGVEC_BGR),
    ])


def train_augmentor(image_size=224, augmentation="imagenet"):
    """Random-size crop (8%..100% of the area for "imagenet", aspect 3/4..4/3; fallback: resize + centre crop)
    resized to image_size (cubic), colour jitter in random order (on float32, clipped and rounded back to uint8
    once), horizontal flip (not for "light")."""
    if augmentation not in TRAIN_AUGMENTATIONS:
        raise DataError("unknown training augmentation {!r}; choose one of {}".format(
            augmentation, ", ".join(sorted(TRAIN_AUGMENTATIONS))))
    knobs = TRAIN_AUGMENTATIONS[augmentation]
    return imgaug.AugmentorList([
        imgaug.GoogleNetRandomCropAndResize(crop_area_fraction=knobs.crop_area_fraction,
                                            aspect_ratio_range=CROP_ASPECT_RATIO,
                                            target_shape=image_size, interp=INTERPOLATION),
        ToFloat32(),
        colour_jitter(),
    ] + ([imgaug.Flip(horiz=True)] if knobs.flip else []) + [
        imgaug.MapImage(round_to_uint8),
    ])


def eval_augmentor(image_size=224):
    """Resize the shorter side to round(image_size * 256/224) (cubic), centre-crop image_size."""
    return imgaug.AugmentorList([imgaug.ResizeShortestEdge(eval_resize_size(image_size), INTERPOLATION),
                                 imgaug.CenterCrop((image_size, image_size))])
