from gated_pruning.models.vgg import VGG, ConvBlock, vgg_widths

__all__ = ["VGG", "ConvBlock", "vgg_widths"]
