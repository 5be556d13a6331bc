"""A plugin from outside the packages: one denoising operation, one attack, one architecture
(with its own backbone), each registered in a few lines, none needing an edit elsewhere.
`python main.py --import tests.toy_plugin ...` makes them available to every mode."""
from dataclasses import dataclass

from attacker import Attack, register_attack, untargeted_result
from nets import ARCHITECTURES, BACKBONES, ArchSpec, denoising_operation
from nets.backbone import denoise, stem
from nets.layers import global_avg_pool


@denoising_operation("toy_halve")
def toy_halve(x, theta, phi, layout, window):
    """D(x) = x / 2: a block with this D equals the null block with its 1x1 conv halved."""
    return x * 0.5


@register_attack("toy-invert")
@dataclass(frozen=True)
class ToyInvert(Attack):
    """Replaces every image by its photographic negative, 255 - x (no gradient, no budget)."""
    strength: float = 1.0

    @property
    def label(self):
        return "Invert-{:g}".format(self.strength)

    def attack(self, image, label, classifier, index=None):
        adversarial = image + self.strength * (255.0 - 2.0 * image)
        return untargeted_result(adversarial, label, classifier)


@BACKBONES.register("toy")
def toy_backbone(x, spec, options, training, outputs):
    """The stem, one denoising block, global average pooling: a new topology."""
    x = outputs.endpoints["stem"] = stem(x, spec, options, training)
    x = denoise("group0_denoise", x, spec, options, training, outputs, path="group0_denoise")
    return global_avg_pool(x, options.layout)


@ARCHITECTURES.register("ToyNet")
def toy_net(depth):
    del depth
    return ArchSpec(blocks=(), widths=(), backbone="toy", stem="small", stem_width=8, denoise_op="toy_halve",
                    denoise_placement="group", num_classes=3, image_size=16)

