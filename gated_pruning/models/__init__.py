"""The networks: `protocol.py` says what every gated model offers the rest of the code; `vgg.py`,
`resnet.py` (CIFAR ResNets) and `tv.py` (any torchvision CNN) implement it; `layers.py` holds the
batch norm that gates fold into."""
